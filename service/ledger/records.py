"""Ledger rows as the records downstream services see (CONTRACT section 3). Pure.

A record is encoded in one of two places. `record_json` encodes a row in Python; it is the
reference, and what the NATS replies and HTTP use. Replay and the relay stream millions of
records, and there the databases encode them themselves (`SQLITE_RECORD_JSON`,
`POSTGRES_RECORD_JSON`): the work then happens in SQLite's C code without the GIL, or in the
PostgreSQL server process, and Python only moves one string per record, several times faster
than encoding in Python. Both expressions give
byte for byte what `record_json` gives: the same keys in the same order, no spaces, integers as
digits, `null`, `true`/`false`, and strings escaped as orjson escapes them (`"`, `\\`, and the
control characters below U+0020, as `\\n`-style or `\\u00XX` escapes; everything else raw
UTF-8). `bench/import_replay_rebuild.py --verify` compares them on a million records (and
measures replay's rate). Change
the three together.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = [
    "POSTGRES_RECORD_JSON",
    "RECORD_COLUMNS",
    "REJECTED_COLUMNS",
    "SQLITE_RECORD_JSON",
    "record_json",
    "record_to_dict",
    "rejected_to_dict",
]

# The columns a record is built from, in this order.
RECORD_COLUMNS = (
    "position, sequence, event_id, session_id, type, event_time, recorded_at, connection_id, "
    "creation_time, data, reason, default_prevented, prevented_by, count_after, source_format, "
    "vendor_reason, origin"
)
REJECTED_COLUMNS = "id, received_at, source, subject, headers, raw, code, message, field"

# record_json(row), as an SQLite expression over a connection_ledger row. Nested json_object()
# and json() values are embedded as JSON, not as strings.
SQLITE_RECORD_JSON = (
    "json_object('position', position, 'sequence', sequence, 'id', event_id, 'type', type, "
    "'sessionId', session_id, 'timestamp', event_time, 'recordedAt', recorded_at, "
    "'connection', json_object('connectionId', connection_id, 'creationTime', creation_time, "
    "'data', data), "
    "'reason', reason, 'source', source_format, 'vendorReason', vendor_reason, 'origin', origin, "
    "'defaultPrevented', json(CASE WHEN default_prevented THEN 'true' ELSE 'false' END), "
    "'preventedBy', prevented_by, 'count', count_after)"
)


def _pg_text(column: str) -> str:
    """A text column as a JSON string, or null."""
    return f"coalesce(to_json({column})::text, 'null')"


# record_json(row), as a PostgreSQL expression. Concatenated by hand because PostgreSQL's own
# object builders put spaces after colons and commas (json_build_object) or reorder keys
# (jsonb); to_json() of a text value is a correctly escaped JSON string.
POSTGRES_RECORD_JSON = (
    """'{"position":' || position || ',"sequence":' || sequence"""
    f""" || ',"id":' || to_json(event_id) || ',"type":' || to_json(type)"""
    f""" || ',"sessionId":' || to_json(session_id)"""
    """ || ',"timestamp":' || event_time || ',"recordedAt":' || recorded_at"""
    f""" || ',"connection":{{"connectionId":' || to_json(connection_id)"""
    f""" || ',"creationTime":' || creation_time || ',"data":' || {_pg_text("data")}"""
    f""" || '}},"reason":' || {_pg_text("reason")}"""
    """ || ',"source":' || to_json(source_format)"""
    f""" || ',"vendorReason":' || {_pg_text("vendor_reason")}"""
    f""" || ',"origin":' || {_pg_text("origin")}"""
    """ || ',"defaultPrevented":' || CASE WHEN default_prevented THEN 'true' ELSE 'false' END"""
    f""" || ',"preventedBy":' || {_pg_text("prevented_by")}"""
    """ || ',"count":' || count_after || '}'"""
)


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
        "source": row[14],
        "vendorReason": row[15],
        "origin": row[16],
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
