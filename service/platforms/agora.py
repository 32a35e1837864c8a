"""Agora Notification Center Service (NCS) callbacks (CONTRACT section 11): JSON `POST`s signed
by `Agora-Signature-V2`, the hex HMAC-SHA256 of the raw body keyed with the NCS secret. Times in
`payload.ts` are seconds; `uid` is a number."""

from __future__ import annotations

from typing import Any, Final

from service.events import EventType, Ignored, Source
from service.platforms import fields
from service.platforms.signatures import check_equal, hex_hmac_sha256

__all__ = ["SIGNATURE_HEADER", "signature", "to_native", "verify"]

SIGNATURE_HEADER: Final = "Agora-Signature-V2"
# Broadcaster, audience and communication-profile joins and leaves.
_TYPES: Final = {
    103: EventType.CREATED,
    105: EventType.CREATED,
    107: EventType.CREATED,
    104: EventType.DESTROYED,
    106: EventType.DESTROYED,
    108: EventType.DESTROYED,
}
_REASONS: Final = {"1": "clientDisconnected", "3": "forceDisconnected"}


def signature(raw: bytes, secret: str) -> str:
    return hex_hmac_sha256(secret, raw)


def verify(given: str | None, raw: bytes, secret: str) -> None:
    check_equal(given.lower() if given else given, signature(raw, secret), SIGNATURE_HEADER)


def to_native(raw: bytes) -> dict[str, Any] | Ignored:
    body = fields.json_object(raw)
    kind = fields.required_integer(body.get("eventType"), "eventType")
    type_ = _TYPES.get(kind)
    if type_ is None:
        return Ignored(str(kind))
    event_id = fields.event_id(fields.required_text(body.get("noticeId"), "noticeId"), "noticeId")
    payload = fields.obj(body.get("payload"), "payload")
    session_id = fields.session_id(
        fields.required_text(payload.get("channelName"), "payload.channelName"), "payload.channelName"
    )
    uid = fields.required_integer(payload.get("uid"), "payload.uid")
    seconds = fields.required_integer(payload.get("ts"), "payload.ts")
    creation_seconds = seconds
    reason = None
    if type_ is EventType.DESTROYED:
        duration = fields.integer(payload.get("duration"), "payload.duration", required=False)
        if duration is not None:
            if duration > seconds:
                raise fields.invalid("payload.duration", "payload.duration reaches back before 1970")
            creation_seconds = seconds - duration
        vendor = fields.vendor_reason(payload.get("reason"), "payload.reason")
        reason = (_REASONS.get(vendor or "", "networkDisconnected"), vendor)
    account = fields.text(payload.get("account"), "payload.account", required=False)
    return fields.native(
        event_id,
        type_,
        session_id,
        seconds * 1000,
        (str(uid), creation_seconds * 1000, account),
        Source.AGORA,
        reason,
    )
