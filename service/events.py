"""The event model: connection events, their two body formats, and every field rule.

Pure: no I/O, no imports from the rest of the service but the error tree. `decode()` is on the
ingest hot path, so it checks fields by hand in the order the contract lists them instead of
building a validation model per message.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final, NamedTuple

import orjson

from service.errors import RejectCode, RejectedInput

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_EPOCH_MS",
    "MAX_ID_CHARS",
    "MAX_POSITION",
    "MAX_VENDOR_REASON_CHARS",
    "NATIVE_REASONS",
    "Event",
    "EventType",
    "Ignored",
    "Origin",
    "Source",
    "check_body_size",
    "decode",
    "decode_object",
    "is_event_id",
    "is_session_id",
    "json_object",
    "subject_tokens",
    "synthetic_event_id",
]

MAX_BODY_BYTES: Final = 64 * 1024
MAX_DATA_CHARS: Final = 1000
MAX_ID_CHARS: Final = 128
MAX_VENDOR_REASON_CHARS: Final = 256
# Year 9999 in epoch milliseconds: larger numbers are not timestamps, and they must fit BIGINT.
MAX_EPOCH_MS: Final = 253_402_300_799_999
# The largest position (or sequence, or id) a query may name: the databases' 64-bit integer.
MAX_POSITION: Final = 2**63 - 1

# Characters that are safe both in one NATS subject token and in a URL path segment.
_SESSION_RE: Final = re.compile(r"[A-Za-z0-9\-_~=:]{1,256}")
# An id is 1 to 128 of A-Z a-z 0-9 . _ : -. Searching for a character outside that set returns
# None for a valid id without building a match object: half the cost of fullmatch.
_ID_FORBIDDEN: Final = re.compile(r"[^A-Za-z0-9._:\-]")


@lru_cache(maxsize=65_536)
def is_session_id(value: str) -> bool:
    """Whether `value` is a valid sessionId. A session has many events: its id is checked
    against the pattern once, then remembered."""
    return _SESSION_RE.fullmatch(value) is not None


def is_event_id(value: str) -> bool:
    """Whether `value` is a valid event id."""
    return 0 < len(value) <= MAX_ID_CHARS and _ID_FORBIDDEN.search(value) is None


class EventType(StrEnum):
    CREATED = "connectionCreated"
    DESTROYED = "connectionDestroyed"


class Source(StrEnum):
    """Where an event came from: a producer's native body, or a platform's callback translated
    at the edge (CONTRACT section 11). Stored in the ledger's `source_format` column."""

    NATIVE = "native"
    VONAGE = "vonage"
    LIVEKIT = "livekit"
    TWILIO = "twilio"
    AGORA = "agora"


class Origin(StrEnum):
    """Why the ledger appended an event no producer sent (CONTRACT section 13). Producers'
    events have none: `decode` never reads an `origin` field, so a producer cannot forge one."""

    EXPIRY = "expiry"
    RECONCILE = "reconcile"


NATIVE_REASONS: Final = frozenset({"clientDisconnected", "forceDisconnected", "networkDisconnected"})
_TYPES: Final = {t.value: t for t in EventType}
_SOURCES: Final = {s.value: s for s in Source}


class Event(NamedTuple):
    """One valid connection event, normalised from either body format.

    A named tuple: immutable like a frozen dataclass, and built in a fifth of the time (a
    frozen dataclass sets each field through object.__setattr__), once per event on ingest."""

    id: str
    type: EventType
    session_id: str
    timestamp: int
    connection_id: str
    creation_time: int
    data: str | None
    reason: str | None
    source: Source = Source.NATIVE
    project_id: str | None = None
    # The platform's own reason for a destroy, as it sent it (CONTRACT section 11).
    vendor_reason: str | None = None
    # Set only on the events the ledger appends itself (expiry, reconciliation); None on every
    # producer's event.
    origin: Origin | None = None

    def content(self) -> tuple[object, ...]:
        """What makes two events with one id the same event (key order and spacing aside)."""
        return (
            self.type.value,
            self.session_id,
            self.timestamp,
            self.connection_id,
            self.creation_time,
            self.data,
            self.reason,
            self.project_id,
            self.source.value,
            self.vendor_reason,
            None if self.origin is None else self.origin.value,
        )

    def to_native(self) -> dict[str, Any]:
        """The native body of this event (what a producer would publish)."""
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type.value,
            "sessionId": self.session_id,
            "timestamp": self.timestamp,
            "connection": {
                "connectionId": self.connection_id,
                "creationTime": self.creation_time,
                "data": self.data,
            },
        }
        if self.reason is not None:
            body["reason"] = self.reason
        if self.source is not Source.NATIVE:
            body["source"] = self.source.value
        if self.vendor_reason is not None:
            body["vendorReason"] = self.vendor_reason
        if self.origin is not None:
            # Kept in the body for the record of a conflict; `decode` does not read it back.
            body["origin"] = self.origin.value
        return body


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed body the ledger does not record (a Vonage stream or session event)."""

    kind: str


def _invalid(field: str | None, message: str) -> RejectedInput:
    return RejectedInput(RejectCode.INVALID_FIELD, message, field)


def _epoch_ms(value: object, field: str) -> int:
    # `type(...) is int` on purpose: JSON true/false arrive as bool, a subclass of int.
    if type(value) is not int or not 0 <= value <= MAX_EPOCH_MS:
        raise _invalid(field, f"{field} must be an integer count of milliseconds since the epoch")
    return value


def _text(value: object, field: str, max_chars: int, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise _invalid(field, f"{field} is required: a string of 1 to {max_chars} characters")
        return None
    if type(value) is not str or not (1 if required else 0) <= len(value) <= max_chars:
        limits = f"1 to {max_chars}" if required else f"at most {max_chars}"
        raise _invalid(field, f"{field} must be a string of {limits} characters")
    if "\x00" in value:
        raise _invalid(field, f"{field} must not contain the NUL character")
    return value


def _session_id(value: object, field: str = "sessionId") -> str:
    if type(value) is not str or not is_session_id(value):
        raise _invalid(
            field,
            f"{field} must be 1 to 256 characters of A-Z a-z 0-9 - _ ~ = : "
            "(safe in a NATS subject and a URL path)",
        )
    return value


def _object(value: object, field: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _invalid(field, f"{field} must be a JSON object")
    return value


def _source(value: object) -> Source:
    if value is None:
        return Source.NATIVE
    found = _SOURCES.get(value) if type(value) is str else None
    if found is None:
        raise _invalid("source", "source must be native, vonage, livekit, twilio or agora")
    return found


def _vendor_reason(value: object, type_: EventType) -> str | None:
    if value is None:
        return None
    if type_ is not EventType.DESTROYED:
        raise _invalid("vendorReason", "vendorReason must be absent on connectionCreated")
    return _text(value, "vendorReason", MAX_VENDOR_REASON_CHARS, required=False)


def _decode_native(body: dict[str, Any], type_: EventType) -> Event:
    # The common case, a valid field, is recognised inline without a call per field; anything
    # else goes through the field's full check, which raises the error it always raised. The
    # order of the checks is the contract's order.
    event_id = body.get("id")
    if type(event_id) is not str or not 0 < len(event_id) <= 128 or _ID_FORBIDDEN.search(event_id):
        raise _invalid("id", "id is required: 1 to 128 characters of A-Z a-z 0-9 . _ : -")
    session_id = _session_id(body.get("sessionId"))
    timestamp = body.get("timestamp")
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_EPOCH_MS:
        timestamp = _epoch_ms(timestamp, "timestamp")
    connection = body.get("connection")
    if type(connection) is not dict:
        raise _invalid("connection", "connection must be a JSON object")
    connection_id = connection.get("connectionId")
    if type(connection_id) is not str or not 0 < len(connection_id) <= 256 or "\x00" in connection_id:
        connection_id = _text(connection_id, "connection.connectionId", 256, required=True)
    creation_time = connection.get("creationTime")
    if type(creation_time) is not int or not 0 <= creation_time <= MAX_EPOCH_MS:
        creation_time = _epoch_ms(creation_time, "connection.creationTime")
    data = connection.get("data")
    if data is not None and (type(data) is not str or len(data) > MAX_DATA_CHARS or "\x00" in data):
        data = _text(data, "connection.data", MAX_DATA_CHARS, required=False)
    reason = body.get("reason")
    if type_ is EventType.DESTROYED:
        # The type check first: `in` on a frozenset raises TypeError for a list or an object.
        if type(reason) is not str or reason not in NATIVE_REASONS:
            raise _invalid(
                "reason",
                "reason must be clientDisconnected, forceDisconnected or networkDisconnected "
                "on connectionDestroyed",
            )
    elif reason is not None:
        raise _invalid("reason", "reason must be absent on connectionCreated")
    # Both optional, and rare: looked up only when the body names them.
    source = Source.NATIVE
    vendor_reason = None
    if "source" in body:
        source = _source(body["source"])
    if "vendorReason" in body:
        vendor_reason = _vendor_reason(body["vendorReason"], type_)
    assert connection_id is not None
    # Every argument given, defaults included: filling in defaults costs a little more.
    return Event(
        event_id,
        type_,
        session_id,
        timestamp,
        connection_id,
        creation_time,
        data,
        reason,
        source,
        None,
        vendor_reason,
    )


def vonage_event_id(session_id: str, connection_id: str, kind: str, timestamp: int) -> str:
    """The deterministic id of a Vonage callback: a retried callback gets the same one."""
    key = orjson.dumps([session_id, connection_id, kind, timestamp])
    return "vonage:" + hashlib.sha256(key).hexdigest()[:40]


def synthetic_event_id(origin: Origin, *parts: object) -> str:
    """The deterministic id of an event the ledger appends itself: the same facts give the
    same id, so a second instance (or a run again after a crash) appending it gets a duplicate,
    never a second record. `<origin>:` and 40 hex digits: within the id rule."""
    key = orjson.dumps([origin.value, *parts])
    return f"{origin.value}:" + hashlib.sha256(key).hexdigest()[:40]


def _decode_vonage(body: dict[str, Any]) -> Event | Ignored:
    kind = body.get("event")
    if type(kind) is not str:
        raise _invalid("event", "event must be a string naming a Vonage session monitoring event")
    type_ = _TYPES.get(kind)
    if type_ is None:
        return Ignored(kind)
    session_id = _session_id(body.get("sessionId"))
    project = body.get("projectId")
    if project is not None and type(project) is not int:
        project = _text(project, "projectId", 256, required=False)
    timestamp = _epoch_ms(body.get("timestamp"), "timestamp")
    connection = _object(body.get("connection"), "connection")
    connection_id = _text(connection.get("id"), "connection.id", 256, required=True)
    creation_time = _epoch_ms(connection.get("createdAt"), "connection.createdAt")
    # `data` and `reason` are recorded as Vonage sent them (CONTRACT 1): no length of their own,
    # only the body's 64 KiB.
    data = _text(connection.get("data"), "connection.data", MAX_BODY_BYTES, required=False)
    reason = _text(body.get("reason"), "reason", MAX_BODY_BYTES, required=False)
    assert connection_id is not None
    return Event(
        vonage_event_id(session_id, connection_id, kind, timestamp),
        type_,
        session_id,
        timestamp,
        connection_id,
        creation_time,
        data,
        reason,
        Source.VONAGE,
        None if project is None else str(project),
        None,
    )


def subject_tokens(subject: str, prefix: str) -> tuple[str, str] | None:
    """`<prefix>.<sessionId>.<type>` -> (sessionId, type); None for any other shape."""
    head, sep, rest = subject.partition(".")
    if head != prefix or not sep:
        return None
    session, sep, type_ = rest.partition(".")
    if not sep or not session or not type_ or "." in type_:
        return None
    return session, type_


def check_body_size(raw: bytes) -> None:
    """The first rule of every body: at most MAX_BODY_BYTES, whatever else is wrong with it."""
    if len(raw) > MAX_BODY_BYTES:
        raise RejectedInput(
            RejectCode.TOO_LARGE,
            f"the body is {len(raw)} bytes; at most {MAX_BODY_BYTES} are accepted",
        )


def json_object(raw: bytes) -> dict[str, Any]:
    """A body's JSON object: size first, then JSON (malformed_json), then an object."""
    check_body_size(raw)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RejectedInput(RejectCode.MALFORMED_JSON, f"the body is not valid JSON: {exc}") from None
    if type(body) is not dict:
        raise _invalid(None, "the body must be a JSON object")
    return body


def decode_object(body: dict[str, Any]) -> Event | Ignored:
    """A body already parsed, in either format: its type, then its field rules (`decode`
    without the bytes: for a body built here, such as a platform's webhook translated, that
    need not be written and parsed again)."""
    if "type" not in body and "event" in body:
        return _decode_vonage(body)
    kind = body.get("type")
    if type(kind) is not str:
        raise _invalid("type", "type is required: connectionCreated or connectionDestroyed")
    type_ = _TYPES.get(kind)
    if type_ is None:
        raise RejectedInput(
            RejectCode.UNKNOWN_TYPE,
            f"type {kind[:64]!r} names no connection event; use connectionCreated or connectionDestroyed",
            "type",
        )
    return _decode_native(body, type_)


def decode(raw: bytes, subject: str | None = None, prefix: str = "connections") -> Event | Ignored:
    """Decode one body in either format, checking the rules in the contract's order:
    size, JSON, type, field rules, then agreement with the subject (when there is one).

    Raises RejectedInput with the code of the first broken rule.
    """
    decoded = decode_object(json_object(raw))
    if isinstance(decoded, Ignored):
        return decoded
    if subject is not None:
        tokens = subject_tokens(subject, prefix)
        if tokens is None:
            raise RejectedInput(
                RejectCode.SUBJECT_MISMATCH,
                f"subject {subject!r} is not {prefix}.<sessionId>.<type>",
                "subject",
            )
        if tokens[0] != decoded.session_id:
            raise RejectedInput(
                RejectCode.SUBJECT_MISMATCH,
                f"sessionId {decoded.session_id!r} does not match the subject's {tokens[0]!r}",
                "sessionId",
            )
        if tokens[1] != decoded.type:  # a StrEnum compares as its str (.value is slower)
            raise RejectedInput(
                RejectCode.SUBJECT_MISMATCH,
                f"type {decoded.type.value!r} does not match the subject's {tokens[1]!r}",
                "type",
            )
    return decoded
