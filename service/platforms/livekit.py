"""LiveKit webhooks (CONTRACT section 11): `POST` with `Content-Type: application/webhook+json`,
signed by an `Authorization` header that holds a JWT (HS256, the API secret; `iss` the API key)
whose `sha256` claim is the base64 SHA-256 of the body. The body is a WebhookEvent in protobuf's
JSON: int64 fields (`createdAt`, `joinedAt`) come as strings of digits, enums as names."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, Final

from service.events import EventType, Ignored, Source
from service.platforms import fields, jwt_hs256
from service.platforms.signatures import BadSignature

__all__ = ["SIGNATURE_HEADER", "sign", "to_native", "verify"]

SIGNATURE_HEADER: Final = "Authorization"
_TYPES: Final = {
    "participant_joined": EventType.CREATED,
    "participant_left": EventType.DESTROYED,
    "participant_connection_aborted": EventType.DESTROYED,
}
# LiveKit's DisconnectReason names the contract maps; any other is a network disconnection.
_REASONS: Final = {
    "CLIENT_INITIATED": "clientDisconnected",
    "PARTICIPANT_REMOVED": "forceDisconnected",
    "DUPLICATE_IDENTITY": "forceDisconnected",
    "ROOM_DELETED": "forceDisconnected",
    "ROOM_CLOSED": "forceDisconnected",
    "SERVER_SHUTDOWN": "forceDisconnected",
}


def _body_hash(raw: bytes) -> str:
    return base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii")


def verify(authorization: str | None, raw: bytes, api_key: str, api_secret: str, now: float) -> None:
    """Raise BadSignature unless `authorization` is LiveKit's token for exactly `raw`."""
    if not authorization:
        raise BadSignature(
            SIGNATURE_HEADER, "the Authorization header is required: LiveKit signs every webhook"
        )
    token = authorization.strip().removeprefix("Bearer ").strip()
    claims = jwt_hs256.verify(token, api_secret, api_key, now, SIGNATURE_HEADER)
    claimed = claims.get("sha256")
    if type(claimed) is not str or not hmac.compare_digest(claimed.encode(), _body_hash(raw).encode()):
        raise BadSignature(
            SIGNATURE_HEADER, "the Authorization header's sha256 claim does not match the body"
        )


def sign(raw: bytes, api_key: str, api_secret: str, now: int, ttl: int = 600) -> str:
    """The Authorization header LiveKit would send with `raw`."""
    claims = {"iss": api_key, "nbf": now, "exp": now + ttl, "sha256": _body_hash(raw)}
    return jwt_hs256.sign(claims, api_secret)


def to_native(raw: bytes) -> dict[str, Any] | Ignored:
    body = fields.json_object(raw)
    kind = fields.required_text(body.get("event"), "event")
    type_ = _TYPES.get(kind)
    if type_ is None:
        return Ignored(kind)
    event_id = fields.event_id(fields.required_text(body.get("id"), "id"), "id")
    room = fields.obj(body.get("room"), "room")
    session_id = fields.session_id(fields.required_text(room.get("name"), "room.name"), "room.name")
    participant = fields.obj(body.get("participant"), "participant")
    connection_id = fields.required_text(participant.get("sid"), "participant.sid")
    timestamp = fields.required_integer(body.get("createdAt"), "createdAt") * 1000
    joined_ms = fields.integer(participant.get("joinedAtMs"), "participant.joinedAtMs", required=False)
    joined = fields.integer(participant.get("joinedAt"), "participant.joinedAt", required=False)
    # A participant that never finished joining (an aborted connection) has no join time: the
    # event's own time stands in for it.
    creation_time = joined_ms if joined_ms else joined * 1000 if joined else timestamp
    data = fields.text(participant.get("metadata"), "participant.metadata", required=False)
    reason = None
    if type_ is EventType.DESTROYED:
        vendor = fields.vendor_reason(participant.get("disconnectReason"), "participant.disconnectReason")
        reason = (_REASONS.get(vendor or "", "networkDisconnected"), vendor)
    return fields.native(
        event_id, type_, session_id, timestamp, (connection_id, creation_time, data), Source.LIVEKIT, reason
    )
