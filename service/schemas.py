"""JSON Schemas of the bodies the service takes and gives, shared by the OpenAPI and AsyncAPI
documents. Pure data; the rules themselves are enforced by events.py."""

from __future__ import annotations

from typing import Any

from service.events import Origin, Source

__all__ = [
    "CONNECTION",
    "CONNECTIONS_ANSWER",
    "COUNT_ANSWER",
    "ERROR",
    "NATIVE_EVENT",
    "RECORD",
    "USAGE_ANSWER",
    "VONAGE_EVENT",
]

SOURCES = tuple(source.value for source in Source)
ORIGINS = tuple(origin.value for origin in Origin)

CONNECTION: dict[str, Any] = {
    "type": "object",
    "required": ["connectionId", "creationTime"],
    "properties": {
        "connectionId": {"type": "string", "minLength": 1, "maxLength": 256},
        "creationTime": {"type": "integer", "description": "ms since the epoch"},
        "data": {"type": ["string", "null"], "maxLength": 1000},
    },
}

NATIVE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "sessionId", "timestamp", "connection"],
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$", "description": "the idempotency key"},
        "type": {"enum": ["connectionCreated", "connectionDestroyed"]},
        "sessionId": {"type": "string", "pattern": "^[A-Za-z0-9_~=:-]{1,256}$"},
        "timestamp": {"type": "integer", "description": "ms since the epoch: when it happened"},
        "connection": CONNECTION,
        "reason": {
            "enum": ["clientDisconnected", "forceDisconnected", "networkDisconnected"],
            "description": "on connectionDestroyed only",
        },
        "source": {
            "enum": list(SOURCES),
            "description": "where the event came from; native when absent",
        },
        "vendorReason": {
            "type": ["string", "null"],
            "maxLength": 256,
            "description": "on connectionDestroyed only: the platform's own reason, as it sent it",
        },
    },
}

VONAGE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["sessionId", "event", "timestamp"],
    "description": "A Vonage Session Monitoring callback, exactly as Vonage POSTs it",
    "properties": {
        "sessionId": {"type": "string"},
        "projectId": {"type": ["string", "integer"]},
        "event": {
            "type": "string",
            "description": "connectionCreated, connectionDestroyed; others are ignored",
        },
        "reason": {"type": "string"},
        "timestamp": {"type": "integer"},
        "connection": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "createdAt": {"type": "integer"},
                "data": {"type": "string"},
            },
        },
    },
}

RECORD: dict[str, Any] = {
    "type": "object",
    "required": [
        "position",
        "sequence",
        "id",
        "type",
        "sessionId",
        "timestamp",
        "recordedAt",
        "connection",
        "reason",
        "source",
        "vendorReason",
        "origin",
        "defaultPrevented",
        "preventedBy",
        "count",
    ],
    "properties": {
        "position": {"type": "integer", "description": "global, gap-free, in commit order"},
        "sequence": {"type": "integer", "description": "per session, gap-free"},
        "id": {"type": "string"},
        "type": {"enum": ["connectionCreated", "connectionDestroyed"]},
        "sessionId": {"type": "string"},
        "timestamp": {"type": "integer"},
        "recordedAt": {"type": "integer"},
        "connection": CONNECTION,
        "reason": {"type": ["string", "null"]},
        "source": {"enum": list(SOURCES)},
        "vendorReason": {"type": ["string", "null"]},
        "origin": {
            "enum": [*ORIGINS, None],
            "description": "why the ledger appended an event no producer sent; null on producers' events",
        },
        "defaultPrevented": {"type": "boolean"},
        "preventedBy": {"type": ["string", "null"]},
        "count": {"type": "integer", "description": "the session's count right after this record"},
    },
}

COUNT_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["sessionId", "count", "position"],
    "properties": {
        "sessionId": {"type": "string"},
        "count": {"type": "integer"},
        "position": {
            "type": "integer",
            "description": "the ledger position the answer reflects: the head, or the position asked "
            "for with at or asOf",
        },
    },
}

CONNECTIONS_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": [*COUNT_ANSWER["required"], "connections"],
    "properties": {**COUNT_ANSWER["properties"], "connections": {"type": "array", "items": CONNECTION}},
}

_MS = {"type": "integer", "description": "ms since the epoch"}
USAGE_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": [
        "sessionId",
        "from",
        "to",
        "peak",
        "connectionMilliseconds",
        "connections",
        "byReason",
        "open",
        "position",
    ],
    "properties": {
        "sessionId": {"type": "string"},
        "from": {**_MS, "description": "window start, ms of event time (included)"},
        "to": {**_MS, "description": "window end, ms of event time (excluded)"},
        "peak": {
            "type": "object",
            "required": ["count", "timestamp"],
            "properties": {
                "count": {"type": "integer", "description": "the most connections at one instant"},
                "timestamp": {
                    "type": ["integer", "null"],
                    "description": "the first instant with that many (ms); null with none",
                },
            },
        },
        "connectionMilliseconds": {
            "type": "integer",
            "description": "the connections' lives clipped to the window, summed",
        },
        "connections": {"type": "integer", "description": "distinct connections there in the window"},
        "byReason": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "those destroyed inside the window, by the destroy's reason",
        },
        "open": {"type": "integer", "description": "those still there when the window ends"},
        "position": {"type": "integer", "description": "the ledger head the answer reflects"},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "field"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": ["string", "null"], "description": "the field as the contract names it"},
        "index": {
            "type": "integer",
            "description": "in a request of several events, the one (from 0) that broke the rule",
        },
    },
}
