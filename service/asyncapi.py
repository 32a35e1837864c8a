"""The AsyncAPI 3.0 document of the service's NATS interface, built from the same names the
code uses. `connledger asyncapi` prints it; docs/asyncapi.json is its checked-in copy, and a
test fails when the two drift apart."""

from __future__ import annotations

from typing import Any

from service import schemas
from service.errors import RejectCode
from service.settings import Settings
from service.subjects import HEAD as HEAD_SUBJECT

__all__ = ["asyncapi_document"]


def _message(
    name: str, payload: dict[str, Any], summary: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": payload,
    }
    if headers:
        message["headers"] = {"type": "object", "properties": headers}
    return message


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    prefix = settings.subject_prefix
    session = {"description": "the session id: A-Z a-z 0-9 - _ ~ = :"}
    kind = {"enum": ["connectionCreated", "connectionDestroyed"]}
    header = {"type": "string"}
    channels: dict[str, Any] = {
        "events": {
            "address": f"{prefix}.{{sessionId}}.{{type}}",
            "description": f"Events in, read from the JetStream stream {settings.connections_stream} by the "
            f"durable pull consumer {settings.consumer_name}. Publish with JetStream (a PubAck means "
            "durably received); do not set Nats-Msg-Id.",
            "parameters": {"sessionId": session, "type": kind},
            "messages": {
                "native": _message("native", schemas.NATIVE_EVENT, "A connection event, at most 64 KiB"),
                "vonage": _message("vonage", schemas.VONAGE_EVENT, "A Vonage Session Monitoring callback"),
            },
        },
        "records": {
            "address": "ledger.records.{sessionId}.{type}",
            "description": "Every ledger record, in position order, on the JetStream stream "
            + settings.ledger_stream,
            "parameters": {"sessionId": session, "type": kind},
            "messages": {
                "record": _message(
                    "record",
                    schemas.RECORD,
                    "A ledger record",
                    {
                        "Nats-Msg-Id": {**header, "description": "the event id"},
                        "Nats-Expected-Last-Msg-Id": {
                            **header,
                            "description": "the event id of the record before it, when the relay "
                            "published the two in one chained batch (absent otherwise); the stream "
                            "stored it only after that one",
                        },
                    },
                )
            },
        },
        "rejected": {
            "address": "ledger.rejected.{code}",
            "description": "Messages that could not be appended: the original bytes as the body",
            "parameters": {"code": {"enum": [code.value for code in RejectCode]}},
            "messages": {
                "rejected": {
                    "name": "rejected",
                    "summary": "The original message, as received",
                    "contentType": "application/octet-stream",
                    "headers": {
                        "type": "object",
                        "properties": {
                            "Ledger-Reject-Code": header,
                            "Ledger-Reject-Message": header,
                            "Ledger-Subject": header,
                            "Ledger-Raw-Truncated": {
                                "type": "string",
                                "description": "Only when the original would not fit beside the headers "
                                "in the server's payload limit: its length in bytes. The body is then "
                                "its beginning; the whole is stored (GET /v1/rejected).",
                            },
                        },
                    },
                }
            },
        },
        "head": {
            "address": HEAD_SUBJECT,
            "description": "Core NATS, at most once: the ledger's head position after each commit that "
            "appended records, from whichever instance committed. A hint to read the ledger now "
            "(the relay and other instances' counts wake on it), never a record itself.",
            "messages": {
                "head": _message(
                    "head",
                    {
                        "type": "object",
                        "required": ["position"],
                        "properties": {"position": {"type": "integer", "minimum": 1}},
                    },
                    "The head position",
                )
            },
        },
        "count": {
            "address": "ledger.sessions.{sessionId}.count",
            "description": 'Request/reply: a session\'s count. Body empty, {} or {"minPosition": n}.',
            "parameters": {"sessionId": session},
            "messages": {
                "answer": _message("countAnswer", schemas.COUNT_ANSWER, "The count"),
                "error": _message("error", schemas.ERROR, "A request that breaks a rule"),
            },
        },
        "connections": {
            "address": "ledger.sessions.{sessionId}.connections",
            "description": "Request/reply: a session's live connections. Body as for count.",
            "parameters": {"sessionId": session},
            "messages": {
                "answer": _message("connectionsAnswer", schemas.CONNECTIONS_ANSWER, "The live set"),
                "error": {"$ref": "#/channels/count/messages/error"},
            },
        },
        "replay": {
            "address": "ledger.replay",
            "description": 'Request {"sessionId"?, "after"?, "limit"?}: the records are sent to the reply '
            "inbox in position order, then an empty message with header "
            "Ledger-Replay-End: <last position sent>. A refused request gets an error answer "
            "first; the end message of a refused or cut-short replay also has a header "
            "Ledger-Replay-Error (invalid_field; busy past LEDGER_MAX_STREAMING_READERS; "
            "unavailable; internal).",
            "messages": {
                "request": _message(
                    "replayRequest",
                    {
                        "type": "object",
                        "properties": {
                            "sessionId": {"type": "string"},
                            "after": {"type": "integer"},
                            "limit": {"type": "integer"},
                        },
                    },
                    "What to replay",
                ),
                "record": {"$ref": "#/channels/records/messages/record"},
            },
        },
    }
    operations = {
        "receiveEvents": {"action": "receive", "channel": {"$ref": "#/channels/events"}},
        "sendRecords": {"action": "send", "channel": {"$ref": "#/channels/records"}},
        "sendRejected": {"action": "send", "channel": {"$ref": "#/channels/rejected"}},
        "sendHead": {"action": "send", "channel": {"$ref": "#/channels/head"}},
        "answerCount": {
            "action": "receive",
            "channel": {"$ref": "#/channels/count"},
            "reply": {"channel": {"$ref": "#/channels/count"}},
        },
        "answerConnections": {
            "action": "receive",
            "channel": {"$ref": "#/channels/connections"},
            "reply": {"channel": {"$ref": "#/channels/connections"}},
        },
        "answerReplay": {"action": "receive", "channel": {"$ref": "#/channels/replay"}},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Connection Ledger",
            "version": "1",
            "description": "The authoritative, replayable record of who is connected to which "
            "realtime session.",
        },
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "127.0.0.1:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
    }
