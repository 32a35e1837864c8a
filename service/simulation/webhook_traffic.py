"""Realistic platform webhook traffic, signed as each platform signs it: the requests LiveKit,
Twilio Video, Agora NCS or Vonage Session Monitoring would send to the service as rooms fill
and empty. Some are retried (the same request again), some are events the ledger ignores, and
some rooms have names that must be escaped into session ids. Pure: yields requests, does no I/O
(the clock that LiveKit's tokens need is handed in)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qs, urlencode

import orjson

from service.errors import ConfigurationError
from service.platforms import agora, livekit, twilio
from service.settings import Settings
from service.simulation.traffic import generate

__all__ = ["PLATFORMS", "WebhookRequest", "webhook_requests"]

PLATFORMS: Final = ("livekit", "twilio", "agora", "vonage")
_LIVEKIT_REASONS: Final = ("CLIENT_INITIATED", "CLIENT_INITIATED", "PARTICIPANT_REMOVED", "SIGNAL_CLOSE")
_AGORA_JOINS: Final = (103, 105, 107)


class WebhookRequest(NamedTuple):
    path: str
    headers: dict[str, str]
    body: bytes


class _Step(NamedTuple):
    kind: str  # join, leave or other
    room: str
    room_sid: str
    connection: str
    joined_ms: int
    at_ms: int
    serial: int
    key: str  # unique to the seed and the step: where the platform puts an id of its own


def _steps(rng: random.Random, seed: int, sessions: int, epoch_ms: int) -> Iterator[_Step]:
    # Every third room has a name that is not a session id as it stands.
    rooms = [f"Sala {i} de reunión" if i % 3 == 0 else f"room-{seed}-{i}" for i in range(sessions)]
    live: list[list[tuple[str, int]]] = [[] for _ in rooms]
    clock = epoch_ms
    serial = 0
    while True:
        clock += rng.randint(5, 400)
        serial += 1
        index = rng.randrange(sessions)
        members = live[index]
        room, room_sid, key = rooms[index], f"RM{seed:x}x{index:06d}", f"{seed:x}x{serial:08d}"
        if rng.random() < 0.05:
            yield _Step("other", room, room_sid, "", clock, clock, serial, key)
        elif members and rng.random() < min(0.9, len(members) / 10):
            connection, joined = members.pop(rng.randrange(len(members)))
            yield _Step("leave", room, room_sid, connection, joined, clock, serial, key)
        else:
            connection = f"PA{key}"
            members.append((connection, clock))
            yield _Step("join", room, room_sid, connection, clock, clock, serial, key)


def _livekit(step: _Step, rng: random.Random, settings: Settings, now: Callable[[], float]) -> WebhookRequest:
    body: dict[str, Any] = {"id": f"EV_{step.key}", "createdAt": str(step.at_ms // 1000)}
    body["room"] = {"sid": step.room_sid, "name": step.room}
    if step.kind == "other":
        body["event"] = "room_started"
    else:
        body["event"] = "participant_joined" if step.kind == "join" else "participant_left"
        participant = {
            "sid": step.connection,
            "identity": f"user-{step.serial % 97}",
            "state": "ACTIVE" if step.kind == "join" else "DISCONNECTED",
            "joinedAt": str(step.joined_ms // 1000),
            "joinedAtMs": str(step.joined_ms),
            "metadata": '{"role":"guest"}',
        }
        if step.kind == "leave":
            participant["disconnectReason"] = rng.choice(_LIVEKIT_REASONS)
        body["participant"] = participant
    raw = orjson.dumps(body)
    token = livekit.sign(raw, settings.livekit_api_key, settings.livekit_api_secret, int(now()))
    headers = {"Authorization": token, "Content-Type": "application/webhook+json"}
    return WebhookRequest("/v1/callbacks/livekit", headers, raw)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _twilio(step: _Step, settings: Settings) -> WebhookRequest:
    events = {"join": "participant-connected", "leave": "participant-disconnected", "other": "room-created"}
    params = {
        "AccountSid": "AC00000000000000000000000000000000",
        "RoomName": step.room,
        "RoomSid": step.room_sid,
        "RoomStatus": "in-progress",
        "RoomType": "group",
        "StatusCallbackEvent": events[step.kind],
        "Timestamp": _iso(step.at_ms),
        "SequenceNumber": str(step.serial),
    }
    if step.kind != "other":
        params |= {"ParticipantSid": step.connection, "ParticipantIdentity": f"user-{step.serial % 97}"}
        params["ParticipantStatus"] = "connected" if step.kind == "join" else "disconnected"
    if step.kind == "leave":
        params["ParticipantDuration"] = str((step.at_ms - step.joined_ms) // 1000)
    raw = urlencode(params).encode()
    path = "/v1/callbacks/twilio"
    url = settings.public_url.rstrip("/") + path
    signature = twilio.signature(
        url, parse_qs(raw.decode(), keep_blank_values=True), settings.twilio_auth_token
    )
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    return WebhookRequest(path, headers, raw)


def _agora(step: _Step, rng: random.Random, settings: Settings) -> WebhookRequest:
    payload: dict[str, Any] = {"channelName": step.room, "ts": step.at_ms // 1000, "clientSeq": step.serial}
    kind = 101  # channel created: not a join or a leave
    if step.kind != "other":
        # A broadcaster, audience member or communication user joins, and leaves as such.
        uid = int(step.connection[-8:])
        kind = _AGORA_JOINS[uid % 3] + (step.kind == "leave")
        payload |= {"uid": uid, "platform": 1, "account": f"user-{step.serial % 97}"}
    if step.kind == "leave":
        payload |= {"reason": rng.choice((1, 1, 2, 3)), "duration": (step.at_ms - step.joined_ms) // 1000}
    notice = {
        "noticeId": f"{step.serial}:{kind}:{step.room_sid}",
        "productId": 1,
        "eventType": kind,
        "notifyMs": step.at_ms,
        "payload": payload,
    }
    raw = orjson.dumps(notice)
    headers = {
        "Agora-Signature-V2": agora.signature(raw, settings.agora_ncs_secret),
        "Content-Type": "application/json",
    }
    return WebhookRequest("/v1/callbacks/agora", headers, raw)


def _require(platform: str, settings: Settings) -> None:
    needs = {
        "livekit": [
            ("LEDGER_LIVEKIT_API_KEY", settings.livekit_api_key),
            ("LEDGER_LIVEKIT_API_SECRET", settings.livekit_api_secret),
        ],
        "twilio": [
            ("LEDGER_TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
            ("LEDGER_PUBLIC_URL", settings.public_url),
        ],
        "agora": [("LEDGER_AGORA_NCS_SECRET", settings.agora_ncs_secret)],
    }.get(platform, [])
    for name, value in needs:
        if not value:
            raise ConfigurationError(
                f"{name} is required to sign {platform} webhooks: set it as the service has it"
            )


def webhook_requests(
    platform: str, settings: Settings, *, seed: int, sessions: int, epoch_ms: int, now: Callable[[], float]
) -> Iterator[WebhookRequest]:
    """Requests of `platform` without end, signed with the secrets in `settings`; about one in
    fifty is sent again, as the platform retries one it had no answer to."""
    _require(platform, settings)
    rng = random.Random(seed)
    if platform == "vonage":
        headers = {"Content-Type": "application/json"}
        if settings.http_token:
            headers["Authorization"] = f"Bearer {settings.http_token}"
        for line in generate(
            10**12, seed=seed, sessions=sessions, vonage_rate=1.0, swap_rate=0.0, epoch_ms=epoch_ms
        ):
            yield WebhookRequest("/v1/callbacks/vonage", headers, line)
        return
    previous: WebhookRequest | None = None
    for step in _steps(rng, seed, sessions, epoch_ms):
        if previous is not None and rng.random() < 0.02:
            yield previous  # the platform's retry
        if platform == "livekit":
            request = _livekit(step, rng, settings, now)
        elif platform == "twilio":
            request = _twilio(step, settings)
        else:
            request = _agora(step, rng, settings)
        previous = request
        yield request
