"""Twilio Video status callbacks (CONTRACT section 11): form-encoded `POST`s signed by
`X-Twilio-Signature`, the base64 HMAC-SHA1, keyed with the account's auth token, of the URL
Twilio requested followed by every form parameter, sorted by name, as name and value."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import unquote

import orjson

from service.events import EventType, Ignored, Source, check_body_size
from service.platforms import fields
from service.platforms.signatures import base64_hmac_sha1, check_equal

__all__ = ["SIGNATURE_HEADER", "event_id", "form", "signature", "to_native", "verify"]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
_TYPES: Final = {
    "participant-connected": EventType.CREATED,
    "participant-disconnected": EventType.DESTROYED,
}

Form = dict[str, list[str]]


def _unescape(part: str) -> str:
    if "+" in part:
        part = part.replace("+", " ")
    return unquote(part, errors="replace") if "%" in part else part


def form(raw: bytes) -> Form:
    """The parameters of a form-encoded body, read only so far as the signature needs: never
    refused here, so that an unsigned body of any shape is refused for its signature (bytes
    that are not UTF-8 become U+FFFD, which no signature of Twilio's covers).

    What `urllib.parse.parse_qs(text, keep_blank_values=True)` gives, at a fifth of its cost
    (a property test holds the two equal): it was the larger part of what a callback costs more
    than a native event. Most of Twilio's parameters hold nothing escaped, so a pair is looked
    at once for `+` and `%` and unescaped only when it has either."""
    params: Form = {}
    for pair in raw.decode("utf-8", "replace").split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = _unescape(name), _unescape(value)
        values = params.get(name)
        if values is None:
            params[name] = [value]
        else:
            values.append(value)
    return params


def signature(url: str, params: Form, auth_token: str) -> str:
    """What Twilio puts in X-Twilio-Signature for a request of `params` to `url`."""
    parts = [url]
    for name in sorted(params):
        values = params[name]
        # Nearly always one value a name: the sort of one is skipped.
        for value in values if len(values) == 1 else sorted(set(values)):
            parts += (name, value)
    return base64_hmac_sha1(auth_token, "".join(parts))


def verify(given: str | None, url: str, params: Form, auth_token: str) -> None:
    check_equal(given, signature(url, params, auth_token), SIGNATURE_HEADER)


def event_id(room_sid: str, participant_sid: str, kind: str) -> str:
    """The deterministic id of a callback: Twilio's retry of it gets the same one."""
    key = orjson.dumps([room_sid, participant_sid, kind])
    return "twilio:" + hashlib.sha256(key).hexdigest()[:40]


def _one(params: Form, name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _epoch_ms(value: str, field: str) -> int:
    """Twilio's time: ISO 8601 in UTC (RFC 2822 in some older callbacks)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise fields.invalid(field, f"{field} must be a time in ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if ms < 0:
        raise fields.invalid(field, f"{field} must be after 1970")
    return ms


def to_native(raw: bytes, params: Form) -> dict[str, Any] | Ignored:
    """The native body of a callback whose signature held: `params` are `form(raw)`."""
    check_body_size(raw)
    kind = fields.required_text(_one(params, "StatusCallbackEvent"), "StatusCallbackEvent")
    type_ = _TYPES.get(kind)
    if type_ is None:
        return Ignored(kind)
    room_sid = fields.required_text(_one(params, "RoomSid"), "RoomSid")
    room = fields.required_text(_one(params, "RoomName"), "RoomName")
    participant_sid = fields.required_text(_one(params, "ParticipantSid"), "ParticipantSid")
    timestamp = _epoch_ms(fields.required_text(_one(params, "Timestamp"), "Timestamp"), "Timestamp")
    creation_time = timestamp
    reason = None
    if type_ is EventType.DESTROYED:
        duration = fields.integer(_one(params, "ParticipantDuration"), "ParticipantDuration", required=False)
        if duration is not None:
            if duration * 1000 > timestamp:
                raise fields.invalid("ParticipantDuration", "ParticipantDuration reaches back before 1970")
            creation_time = timestamp - duration * 1000
        # Twilio says nothing of why a participant left.
        reason = ("clientDisconnected", None)
    identity = fields.text(_one(params, "ParticipantIdentity"), "ParticipantIdentity", required=False)
    return fields.native(
        event_id(room_sid, participant_sid, kind),
        type_,
        fields.session_id(room, "RoomName"),
        timestamp,
        (participant_sid, creation_time, identity),
        Source.TWILIO,
        reason,
    )
