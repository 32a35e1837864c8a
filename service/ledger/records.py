"""Ledger rows as the records downstream services see (CONTRACT section 3). Pure."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["RECORD_COLUMNS", "REJECTED_COLUMNS", "record_json", "record_to_dict", "rejected_to_dict"]

# The columns a record is built from, in this order.
RECORD_COLUMNS = (
    "position, sequence, event_id, session_id, type, event_time, recorded_at, connection_id, "
    "creation_time, data, reason, default_prevented, prevented_by, count_after"
)
REJECTED_COLUMNS = "id, received_at, source, subject, headers, raw, code, message, field"


def record_to_dict(row: Sequence[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "position": row[0],
        "sequence": row[1],
        "id": row[2],
        "type": row[4],
        "sessionId": row[3],
        "timestamp": row[5],
        "recordedAt": row[6],
        "connection": {"connectionId": row[7], "creationTime": row[8], "data": row[9]},
        "reason": row[10],
        "defaultPrevented": bool(row[11]),
        "preventedBy": row[12],
        "count": row[13],
    }
    return body


def record_json(row: Sequence[Any]) -> bytes:
    return orjson.dumps(record_to_dict(row))


def rejected_to_dict(row: Sequence[Any]) -> dict[str, Any]:
    headers = orjson.loads(row[4]) if row[4] else None
    return {
        "id": row[0],
        "receivedAt": row[1],
        "source": row[2],
        "subject": row[3],
        "headers": headers,
        "raw": base64.b64encode(bytes(row[5])).decode("ascii"),
        "code": row[6],
        "message": row[7],
        "field": row[8],
    }
