"""Reading a platform's body with errors that name the platform's own fields (`room.name`,
`payload.uid`), so the sender is told what of its body was wrong, not what of ours."""

from __future__ import annotations

from typing import Any

from service.errors import RejectCode, RejectedInput
from service.events import (
    MAX_ID_CHARS,
    MAX_VENDOR_REASON_CHARS,
    EventType,
    Source,
    is_event_id,
    is_session_id,
    json_object,
)
from service.platforms.escaping import escape_session_id

__all__ = [
    "event_id",
    "integer",
    "invalid",
    "json_object",
    "native",
    "obj",
    "required_integer",
    "required_text",
    "session_id",
    "text",
    "vendor_reason",
]


def invalid(field: str | None, message: str) -> RejectedInput:
    return RejectedInput(RejectCode.INVALID_FIELD, message, field)


def obj(value: object, field: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise invalid(field, f"{field} is required: a JSON object")
    return value


def text(value: object, field: str, *, required: bool = True, max_chars: int | None = None) -> str | None:
    if value is None or value == "":
        if required:
            raise invalid(field, f"{field} is required: a non-empty string")
        return None
    if type(value) is not str:
        raise invalid(field, f"{field} must be a string")
    if max_chars is not None and len(value) > max_chars:
        raise invalid(field, f"{field} must be at most {max_chars} characters")
    return value


def required_text(value: object, field: str) -> str:
    found = text(value, field)
    assert found is not None
    return found


def integer(value: object, field: str, *, required: bool = True) -> int | None:
    """An integer, or its decimal digits in a string (protobuf's JSON writes int64 so)."""
    if value is None or value == "":
        if required:
            raise invalid(field, f"{field} is required: an integer")
        return None
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    raise invalid(field, f"{field} must be a non-negative integer")


def required_integer(value: object, field: str) -> int:
    found = integer(value, field)
    assert found is not None
    return found


def event_id(value: str, field: str) -> str:
    if not is_event_id(value):
        raise invalid(field, f"{field} must be 1 to {MAX_ID_CHARS} characters of A-Z a-z 0-9 . _ : -")
    return value


def session_id(room: str, field: str) -> str:
    """The session id of a room name (escaped when it must be), which must fit the rule."""
    escaped = escape_session_id(room)
    if not is_session_id(escaped):
        raise invalid(field, f"{field} is too long: escaped, it must fit in 256 characters")
    return escaped


def native(
    event_id: str,
    type_: EventType,
    session_id: str,
    timestamp: int,
    connection: tuple[str, int, str | None],
    source: Source,
    reason: tuple[str, str | None] | None = None,
) -> dict[str, Any]:
    """A native body (CONTRACT section 1): `connection` is (connectionId, creationTime, data),
    `reason` (reason, vendorReason) on a destroy."""
    body: dict[str, Any] = {
        "id": event_id,
        "type": type_.value,
        "sessionId": session_id,
        "timestamp": timestamp,
        "connection": {"connectionId": connection[0], "creationTime": connection[1], "data": connection[2]},
        "source": source.value,
    }
    if reason is not None:
        body["reason"], body["vendorReason"] = reason
    return body


def vendor_reason(value: object, field: str) -> str | None:
    """A platform's own reason as it sent it: a string, or a number written as digits."""
    if type(value) is int:
        return str(value)
    return text(value, field, required=False, max_chars=MAX_VENDOR_REASON_CHARS)
