"""The checked-in AsyncAPI document is the one the code builds."""

from __future__ import annotations

import json
from pathlib import Path

from service.asyncapi import asyncapi_document
from service.errors import RejectCode
from service.settings import Settings

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_docs_asyncapi_json_matches_the_code() -> None:
    built = asyncapi_document(Settings())
    assert json.loads(CHECKED_IN.read_text()) == built, (
        "docs/asyncapi.json is out of date: run `connledger asyncapi > docs/asyncapi.json`"
    )


def test_the_document_names_every_subject_and_rejection_code() -> None:
    document = asyncapi_document(Settings())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {
        "connections.{sessionId}.{type}",
        "ledger.records.{sessionId}.{type}",
        "ledger.rejected.{code}",
        "ledger.head",
        "ledger.sessions.{sessionId}.count",
        "ledger.sessions.{sessionId}.connections",
        "ledger.replay",
    }
    codes = document["channels"]["rejected"]["parameters"]["code"]["enum"]
    assert codes == [code.value for code in RejectCode]
    assert document["asyncapi"].startswith("3.")
