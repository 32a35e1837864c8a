"""The checked-in OpenAPI document is the one the code builds, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

from service.http.openapi import openapi_document, openapi_json

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = "docs/openapi.json is out of date: run `connledger openapi > docs/openapi.json`"


def test_docs_openapi_json_matches_the_code() -> None:
    checked_in = CHECKED_IN.read_bytes()
    # Parsed first, so that a difference in content shows as a difference of documents.
    assert json.loads(checked_in) == openapi_document(), REGENERATE
    assert checked_in == openapi_json(), REGENERATE


def test_the_document_describes_every_route_of_the_api() -> None:
    document = openapi_document()
    assert document["info"]["title"] == "Connection Ledger"
    assert set(document["paths"]) == {
        "/v1/events",
        "/v1/callbacks/vonage",
        "/v1/callbacks/livekit",
        "/v1/callbacks/twilio",
        "/v1/callbacks/agora",
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/count",
        "/v1/sessions/{session_id}/usage",
        "/v1/sessions/{session_id}/stream",
        "/v1/sessions/{session_id}/history",
        "/v1/overview",
        "/v1/rejected",
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs/asyncapi",
    }
    assert set(document["paths"]["/v1/events"]) == {"get", "post"}
