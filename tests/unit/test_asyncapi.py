"""The checked-in AsyncAPI document is the one FastStream generates from the application."""

from __future__ import annotations

import json
from pathlib import Path

from service.errors import RejectCode
from service.nats.application import asyncapi_document
from service.settings import Settings

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_docs_asyncapi_json_matches_the_code() -> None:
    built = asyncapi_document(Settings())
    assert json.loads(CHECKED_IN.read_text()) == built, (
        "docs/asyncapi.json is out of date: run `connledger asyncapi > docs/asyncapi.json`"
    )


def test_the_document_names_every_subject_and_rejection_code() -> None:
    document = asyncapi_document(Settings())
    channels = document["channels"]
    addresses = {channel["address"] for channel in channels.values()}
    assert addresses == {
        "connections.{sessionId}.{type}",
        "ledger.records.{sessionId}.{type}",
        "ledger.rejected.{code}",
        "ledger.head",
        "ledger.sessions.{sessionId}.count",
        "ledger.sessions.{sessionId}.connections",
        "ledger.sessions.{sessionId}.usage",
        "ledger.replay",
    }
    assert all(code.value in channels["rejected"]["description"] for code in RejectCode)
    assert document["asyncapi"].startswith("3.")
    # What each side does: the service receives events and requests, sends the rest.
    actions = {name: operation["action"] for name, operation in document["operations"].items()}
    assert actions == {
        "events": "receive",
        "count": "receive",
        "connections": "receive",
        "usage": "receive",
        "replay": "receive",
        "records": "send",
        "rejected": "send",
        "head": "send",
        "countAnswer": "send",
        "connectionsAnswer": "send",
        "usageAnswer": "send",
        "replayRecords": "send",
    }
    # The request/reply subscribers answer in one queue group.
    for name in ("count", "connections", "usage", "replay"):
        assert channels[name]["bindings"]["nats"]["queue"] == "connection-ledger"


def test_the_document_carries_the_bodies() -> None:
    schemas = asyncapi_document(Settings())["components"]["schemas"]
    assert set(schemas["SessionQuery"]["properties"]) == {"minPosition", "at", "asOf"}
    assert set(schemas["UsageQuery"]["properties"]) == {"from", "to", "minPosition"}
    usage = schemas["usageAnswer:Message:Payload"]["anyOf"][0]
    assert set(usage["required"]) >= {"peak", "connectionMilliseconds", "byReason", "open"}
    assert set(schemas["ReplayRequest"]["properties"]) == {"after", "limit", "sessionId"}
    events = schemas["events:Message:Payload"]["oneOf"]
    assert [event["title"] for event in events] == ["NativeEvent", "VonageEvent"]
    assert "position" in schemas["records:Message:Payload"]["properties"]
