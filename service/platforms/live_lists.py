"""The platforms' lists of a session's live connections, for reconciliation (CONTRACT section
13): the requests to make and their answers read. Pure: the HTTP itself is made elsewhere.

    Vonage Video  GET {base}/v2/project/{applicationId}/session/{sessionId}/connection, with an
                  RS256 JWT of the application (claims application_id, iat, exp, jti) in the
                  `Authorization: Bearer` header; the answer's `items` each hold `connectionId`
                  and `createdAt` (ms).
    LiveKit       POST {base}/twirp/livekit.RoomService/ListParticipants, JSON body
                  {"room": name}, with an HS256 JWT (iss the API key, video grant roomAdmin and
                  the room); the answer's `participants` each hold `sid`, `joinedAtMs` or
                  `joinedAt` (s) as protobuf's JSON writes int64s (strings of digits), and
                  `metadata`, and `state` (only JOINED and ACTIVE ones are in the room).

An answer that is not a list as the platform writes one is an error, never an empty list: an
empty list would make every connection of the session a ghost."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final, NamedTuple
from urllib.parse import quote

import orjson

from service.platforms import jwt_hs256, jwt_rs256
from service.platforms.escaping import unescape_session_id

__all__ = [
    "TOKEN_SECONDS",
    "Listed",
    "PlatformError",
    "Request",
    "livekit_answer",
    "livekit_request",
    "vonage_answer",
    "vonage_request",
]

TOKEN_SECONDS: Final = 300
_IN_THE_ROOM: Final = frozenset({"JOINED", "ACTIVE"})


class Listed(NamedTuple):
    """A connection the platform lists as live."""

    creation_time: int  # ms since the epoch
    data: str | None


@dataclass(frozen=True, slots=True)
class PlatformError(Exception):
    """The platform gave no list: an HTTP error, or an answer that is not one. Reconciliation
    acts on no session whose look failed."""

    message: str
    status: int | None = None
    # Seconds the platform asked to wait (a 429's or 503's Retry-After).
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


class Request(NamedTuple):
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def vonage_request(
    base_url: str, application_id: str, key: jwt_rs256.RsaKey, session_id: str, now: int
) -> Request:
    """The list request of a Vonage session (the ledger's session id is Vonage's own)."""
    claims = {
        "application_id": application_id,
        "iat": now,
        "exp": now + TOKEN_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    url = (
        f"{base_url.rstrip('/')}/v2/project/{quote(application_id, safe='')}"
        f"/session/{quote(session_id, safe='')}/connection"
    )
    headers = {"Authorization": f"Bearer {jwt_rs256.sign(claims, key)}", "Accept": "application/json"}
    return Request("GET", url, headers, None)


def livekit_request(base_url: str, api_key: str, api_secret: str, session_id: str, now: int) -> Request:
    """The ListParticipants request of the LiveKit room a session id was escaped from."""
    room = unescape_session_id(session_id)
    claims = {
        "iss": api_key,
        "sub": api_key,
        "nbf": now,
        "exp": now + TOKEN_SECONDS,
        "video": {"roomAdmin": True, "room": room},
    }
    url = f"{base_url.rstrip('/')}/twirp/livekit.RoomService/ListParticipants"
    headers = {
        "Authorization": f"Bearer {jwt_hs256.sign(claims, api_secret)}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    return Request("POST", url, headers, orjson.dumps({"room": room}))


def _json(raw: bytes, platform: str) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise PlatformError(f"{platform} answered with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise PlatformError(f"{platform} answered with JSON that is not an object")
    return body


def _integer(value: object) -> int | None:
    if type(value) is int:
        return value
    if type(value) is str and value.isdigit():
        return int(value)
    return None


def vonage_answer(raw: bytes) -> dict[str, Listed]:
    body = _json(raw, "Vonage")
    items = body.get("items")
    if not isinstance(items, list):
        raise PlatformError("Vonage's answer has no items list")
    count = body.get("count")
    if type(count) is int and count > len(items):
        # A partial list would make the connections left out look gone.
        raise PlatformError(f"Vonage's answer lists {len(items)} of {count} connections")
    listed: dict[str, Listed] = {}
    for item in items:
        connection_id = item.get("connectionId") if isinstance(item, dict) else None
        created = _integer(item.get("createdAt")) if isinstance(item, dict) else None
        if type(connection_id) is not str or not connection_id or created is None:
            raise PlatformError("Vonage's answer has an item without connectionId and createdAt")
        if item.get("connectionState", "Connected") != "Connected":
            continue  # still connecting: the ledger has not heard of it yet, rightly
        data = item.get("data")
        listed[connection_id] = Listed(created, data if isinstance(data, str) else None)
    return listed


def livekit_answer(raw: bytes) -> dict[str, Listed]:
    body = _json(raw, "LiveKit")
    participants = body.get("participants", [])  # protobuf's JSON leaves an empty list out
    if not isinstance(participants, list):
        raise PlatformError("LiveKit's answer has a participants field that is not a list")
    listed: dict[str, Listed] = {}
    for participant in participants:
        if not isinstance(participant, dict):
            raise PlatformError("LiveKit's answer has a participant that is not an object")
        sid = participant.get("sid")
        joined_ms = _integer(participant.get("joinedAtMs"))
        if joined_ms is None:
            joined = _integer(participant.get("joinedAt"))
            joined_ms = None if joined is None else joined * 1000
        if type(sid) is not str or not sid or joined_ms is None:
            raise PlatformError("LiveKit's answer has a participant without sid and joinedAt")
        # JOINING (protobuf's JSON leaves the default out: no state) comes before the join
        # webhook; DISCONNECTED after the leave. Only JOINED and ACTIVE are in the room.
        if participant.get("state") not in _IN_THE_ROOM:
            continue
        metadata = participant.get("metadata")
        listed[sid] = Listed(joined_ms, metadata if isinstance(metadata, str) and metadata else None)
    return listed
