"""Other platforms' webhooks over HTTP on every backend (CONTRACT section 11): each platform's
body signed as the platform signs it (LiveKit and Twilio with their own SDKs, Agora by its
documented algorithm), recorded once however often it is retried, refused with 401 when the
signature is missing or wrong, and absent (404) when the platform is not configured."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from google.protobuf.json_format import MessageToJson
from livekit.api import AccessToken
from livekit.protocol.models import DisconnectReason, ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent
from twilio.request_validator import RequestValidator

from service.app.bootstrap import follow_counts, open_ledger
from service.commit_signal import CommitSignal
from service.errors import ConfigurationError
from service.http.app import HttpContext, create_app
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings
from service.simulation.webhook_traffic import webhook_requests
from tests.contract.test_http import DirectPublisher, _asyncapi, _ready
from tests.unit.test_platforms import LIVEKIT_REASONS

KEY, SECRET = "APIwebhooks", "livekit-secret-of-at-least-32-bytes!"
TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"
PUBLIC_URL = "https://ledger.example.com"
NCS_SECRET = "agora-ncs-secret"
ROOM = "Sala de reunión 3"
SESSION = "Sala~20de~20reuni~C3~B3n~203"

Api = tuple[httpx.AsyncClient, LedgerService, DirectPublisher]


@pytest.fixture
async def hooks_api(settings: Settings) -> AsyncIterator[Api]:
    configured = settings.model_copy(
        update={
            "livekit_api_key": KEY,
            "livekit_api_secret": SECRET,
            "twilio_auth_token": TWILIO_TOKEN,
            "public_url": PUBLIC_URL + "/",
            "agora_ncs_secret": NCS_SECRET,
            "http_token": "bearer-for-everything-else",
        }
    )
    async with open_ledger(configured) as ledger, follow_counts(ledger) as counts:
        committed = CommitSignal()
        publisher = DirectPublisher(ledger, committed)
        app = create_app(HttpContext(ledger, committed, counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
        # A platform calls the service by its public name, which no setting lists: the
        # signature, not the Host or the bearer token, is what admits it.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.example.com") as client:
            yield client, ledger, publisher


async def records(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    answer = await client.get(
        "http://localhost/v1/events", headers={"Authorization": "Bearer bearer-for-everything-else"}
    )
    return [orjson.loads(line) for line in answer.content.splitlines()]


async def metric(client: httpx.AsyncClient, line: str) -> bool:
    return line in (await client.get("http://localhost/metrics")).text


# LiveKit -------------------------------------------------------------------------------------


def livekit_body(event: str, event_id: str, sid: str = "PA_1", room: str = ROOM, **participant: Any) -> bytes:
    webhook = WebhookEvent(
        event=event,
        id=event_id,
        created_at=1_732_700_000,
        room=Room(sid="RM_1", name=room),
        participant=ParticipantInfo(
            sid=sid, identity="ana", joined_at=1_732_699_990, joined_at_ms=1_732_699_990_123, **participant
        ),
    )
    return MessageToJson(webhook).encode()


def livekit_headers(raw: bytes, secret: str = SECRET, ttl: float | None = None) -> dict[str, str]:
    token = AccessToken(KEY, secret).with_sha256(base64.b64encode(hashlib.sha256(raw).digest()).decode())
    if ttl is not None:
        token = token.with_ttl(datetime.timedelta(seconds=ttl))
    return {"Authorization": token.to_jwt(), "Content-Type": "application/webhook+json"}


async def post_livekit(client: httpx.AsyncClient, raw: bytes, **kw: Any) -> httpx.Response:
    return await client.post("/v1/callbacks/livekit", content=raw, headers=livekit_headers(raw, **kw))


async def test_livekit_joins_leaves_and_retries(hooks_api: Api) -> None:
    client, _, _ = hooks_api
    joined = livekit_body("participant_joined", "EV_join", metadata="name=Ana")
    for _ in range(3):  # LiveKit retries: one record
        answer = await post_livekit(client, joined)
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
    reasons = LIVEKIT_REASONS
    for n, value in enumerate(reasons):
        kind = "participant_connection_aborted" if n % 2 else "participant_left"
        raw = livekit_body(kind, f"EV_leave{n}", sid=f"PA_L{n}", disconnect_reason=value)
        assert (await post_livekit(client, raw)).status_code == 202
    found = await records(client)
    assert len(found) == 1 + len(reasons)
    first = found[0]
    assert (first["id"], first["sessionId"], first["source"], first["vendorReason"]) == (
        "EV_join", SESSION, "livekit", None,
    )  # fmt: skip
    assert first["connection"] == {
        "connectionId": "PA_1",
        "creationTime": 1_732_699_990_123,
        "data": "name=Ana",
    }
    assert first["timestamp"] == 1_732_700_000_000
    for record, (value, reason) in zip(found[1:], reasons.items(), strict=True):
        vendor = None if value == DisconnectReason.UNKNOWN_REASON else DisconnectReason.Name(value)
        assert (record["type"], record["reason"], record["vendorReason"]) == (
            "connectionDestroyed",
            reason,
            vendor,
        )
    count = await client.get(f"http://localhost/v1/sessions/{SESSION}/count")
    assert count.json()["count"] == 1  # PA_1 joined; those who left never were live here


async def test_livekit_refusals_and_ignored_events(hooks_api: Api) -> None:
    client, _, _ = hooks_api
    raw = livekit_body("participant_joined", "EV_1")
    refused = [
        await client.post("/v1/callbacks/livekit", content=raw, headers={"Content-Type": "application/json"}),
        await post_livekit(client, raw, secret="another-secret-of-at-least-32-bytes"),
        await post_livekit(client, raw, ttl=-120),  # expired, past the leeway
        await client.post(
            "/v1/callbacks/livekit", content=raw.replace(b"ana", b"eve"), headers=livekit_headers(raw)
        ),
    ]
    for answer in refused:
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "unauthorized"
        assert answer.json()["field"] == "Authorization"
    assert await metric(client, 'ledger_webhook_signature_failures_total{platform="livekit"} 4.0')
    # Signed, but not what LiveKit sends.
    not_json = await post_livekit(client, b"{not json")
    assert (not_json.status_code, not_json.json()["error"]) == (400, "malformed_json")
    no_room = orjson.dumps({"event": "participant_joined", "id": "EV_2", "createdAt": "1"})
    answer = await post_livekit(client, no_room)
    assert (answer.status_code, answer.json()["field"]) == (422, "room")
    # Fields LiveKit may add later are ignored; events that are not joins or leaves are too.
    document = orjson.loads(livekit_body("participant_joined", "EV_3"))
    document["brandNew"] = [1, 2]
    assert (await post_livekit(client, orjson.dumps(document))).json() == {"accepted": 1}
    started = orjson.dumps({"event": "room_started", "id": "EV_4", "room": {"name": "r"}})
    answer = await post_livekit(client, started)
    assert (answer.status_code, answer.json()) == (202, {"accepted": 0})
    assert await metric(client, 'ledger_webhook_ignored_total{platform="livekit"} 1.0')
    assert [record["id"] for record in await records(client)] == ["EV_3"]


# Twilio --------------------------------------------------------------------------------------


def twilio_params(event: str, participant: str = "PA1", **extra: str) -> dict[str, str]:
    params = {
        "AccountSid": "AC1",
        "RoomName": ROOM,
        "RoomSid": "RM1",
        "RoomStatus": "in-progress",
        "RoomType": "group",
        "StatusCallbackEvent": event,
        "Timestamp": "2024-11-27T09:33:20.123Z",
        "ParticipantSid": participant,
        "ParticipantStatus": "connected",
        "ParticipantIdentity": "ana",
        "SequenceNumber": "1",
    }
    params.update(extra)
    return params


async def post_twilio(
    client: httpx.AsyncClient, params: dict[str, str], token: str = TWILIO_TOKEN, raw: bytes | None = None
) -> httpx.Response:
    signature = RequestValidator(token).compute_signature(PUBLIC_URL + "/v1/callbacks/twilio", params)
    return await client.post(
        "/v1/callbacks/twilio",
        content=urlencode(params).encode() if raw is None else raw,
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )


async def test_twilio_connects_disconnects_and_retries(hooks_api: Api) -> None:
    client, _, _ = hooks_api
    for _ in range(2):
        answer = await post_twilio(client, twilio_params("participant-connected", NewField="x"))
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
    left = twilio_params(
        "participant-disconnected", ParticipantDuration="20", ParticipantStatus="disconnected"
    )
    assert (await post_twilio(client, left)).json() == {"accepted": 1}
    assert (await post_twilio(client, left)).json() == {"accepted": 1}
    found = await records(client)
    assert [(r["type"], r["sessionId"], r["source"], r["reason"], r["vendorReason"]) for r in found] == [
        ("connectionCreated", SESSION, "twilio", None, None),
        ("connectionDestroyed", SESSION, "twilio", "clientDisconnected", None),
    ]
    assert found[0]["connection"] == {"connectionId": "PA1", "creationTime": 1_732_700_000_123, "data": "ana"}
    assert found[1]["connection"]["creationTime"] == 1_732_700_000_123 - 20_000
    assert found[0]["id"].startswith("twilio:")


async def test_twilio_refusals_and_ignored_events(hooks_api: Api) -> None:
    client, _, _ = hooks_api
    params = twilio_params("participant-connected")
    wrong = await post_twilio(client, params, token="not-the-token")
    tampered = await post_twilio(client, params, raw=urlencode({**params, "RoomName": "other"}).encode())
    unsigned = await client.post(
        "/v1/callbacks/twilio",
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    for answer in (wrong, tampered, unsigned):
        assert (answer.status_code, answer.json()["field"]) == (401, "X-Twilio-Signature")
    assert await metric(client, 'ledger_webhook_signature_failures_total{platform="twilio"} 3.0')
    # Bytes that are not UTF-8 are no form Twilio signed; a signed form past 64 KiB is too large.
    not_text = await client.post(
        "/v1/callbacks/twilio", content=b"\xff\xfe=1", headers={"X-Twilio-Signature": "x"}
    )
    assert (not_text.status_code, not_text.json()["field"]) == (401, "X-Twilio-Signature")
    large = await post_twilio(client, {**params, "ParticipantIdentity": "x" * 70_000})
    assert (large.status_code, large.json()["error"]) == (413, "too_large")
    missing = {k: v for k, v in params.items() if k != "ParticipantSid"}
    answer = await post_twilio(client, missing)
    assert (answer.status_code, answer.json()["field"]) == (422, "ParticipantSid")
    created = await post_twilio(client, twilio_params("room-created"))
    assert (created.status_code, created.json()) == (202, {"accepted": 0})
    assert await metric(client, 'ledger_webhook_ignored_total{platform="twilio"} 1.0')
    assert await records(client) == []


# Agora ---------------------------------------------------------------------------------------


def agora_body(event_type: int, uid: int = 7, **payload: Any) -> bytes:
    fields = {"channelName": ROOM, "uid": uid, "platform": 1, "clientSeq": 1, "ts": 1_732_700_000}
    fields.update(payload)
    notice = {
        "noticeId": f"2000001428:{uid}:{event_type}",
        "productId": 1,
        "eventType": event_type,
        "notifyMs": 1_732_700_000_456,
        "payload": fields,
    }
    return orjson.dumps(notice)


async def post_agora(client: httpx.AsyncClient, raw: bytes, secret: str = NCS_SECRET) -> httpx.Response:
    signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return await client.post(
        "/v1/callbacks/agora",
        content=raw,
        headers={"Agora-Signature-V2": signature, "Content-Type": "application/json"},
    )


async def test_agora_joins_leaves_and_retries(hooks_api: Api) -> None:
    client, _, _ = hooks_api
    joined = agora_body(103, account="ana", newField=True)
    for _ in range(2):
        answer = await post_agora(client, joined)
        assert (answer.status_code, answer.json()) == (200, {"accepted": 1})
    leaves = {
        1: "clientDisconnected",
        3: "forceDisconnected",
        2: "networkDisconnected",
        999: "networkDisconnected",
    }
    for n, vendor in enumerate(leaves):
        kind = (104, 106, 108)[n % 3]
        assert (
            await post_agora(client, agora_body(kind, uid=7 + n, reason=vendor, duration=30))
        ).status_code == 200
    found = await records(client)
    assert [(r["sessionId"], r["source"], r["reason"], r["vendorReason"]) for r in found] == [
        (SESSION, "agora", None, None),
        *[(SESSION, "agora", reason, str(vendor)) for vendor, reason in leaves.items()],
    ]
    assert found[0]["connection"] == {"connectionId": "7", "creationTime": 1_732_700_000_000, "data": "ana"}


async def test_agora_refusals_and_ignored_events(hooks_api: Api) -> None:
    client, _, _ = hooks_api
    raw = agora_body(103)
    wrong = await post_agora(client, raw, secret="other")
    tampered = await client.post(
        "/v1/callbacks/agora",
        content=raw.replace(b'"uid":7', b'"uid":8'),
        headers={"Agora-Signature-V2": hmac.new(NCS_SECRET.encode(), raw, hashlib.sha256).hexdigest()},
    )
    for answer in (wrong, tampered):
        assert (answer.status_code, answer.json()["field"]) == (401, "Agora-Signature-V2")
    assert await metric(client, 'ledger_webhook_signature_failures_total{platform="agora"} 2.0')
    no_channel = orjson.dumps({"noticeId": "n1", "eventType": 103, "payload": {"uid": 1, "ts": 1}})
    answer = await post_agora(client, no_channel)
    assert (answer.status_code, answer.json()["field"]) == (422, "payload.channelName")
    # Signed, but past the 64 KiB of any event body.
    large = await post_agora(client, agora_body(103, account="x" * 70_000))
    assert (large.status_code, large.json()["error"]) == (413, "too_large")
    ignored = await post_agora(client, agora_body(101))
    assert (ignored.status_code, ignored.json()) == (200, {"accepted": 0})
    assert await metric(client, 'ledger_webhook_ignored_total{platform="agora"} 1.0')
    assert await records(client) == []


async def test_a_platform_without_its_secret_has_no_route(settings: Settings) -> None:
    async with open_ledger(settings) as ledger, follow_counts(ledger) as counts:
        committed = CommitSignal()
        app = create_app(
            HttpContext(ledger, committed, counts, DirectPublisher(ledger, committed), _ready, _asyncapi)  # type: ignore[arg-type]
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client:
            for platform in ("livekit", "twilio", "agora"):
                answer = await client.post(f"/v1/callbacks/{platform}", content=b"{}")
                assert answer.status_code == 404, platform


@pytest.mark.parametrize("platform", ["livekit", "twilio", "agora", "vonage"])
async def test_simulated_traffic_of_each_platform_is_accepted(hooks_api: Api, platform: str) -> None:
    """What `connledger simulate --platform` sends is signed as the service checks it."""
    client, ledger, _ = hooks_api
    requests = webhook_requests(
        platform, ledger.settings, seed=3, sessions=4, epoch_ms=1_732_700_000_000, now=time.time
    )
    accepted = 0
    for request in itertools.islice(requests, 300):
        answer = await client.post(request.path, content=request.body, headers=request.headers)
        assert answer.status_code in (200, 202), answer.text
        accepted += answer.json()["accepted"]
    found = await records(client)
    assert 0 < len(found) < accepted  # some were retries, recorded once
    assert {record["source"] for record in found} == {platform}
    if platform != "vonage":  # Vonage's session ids are its own; other platforms' rooms have names
        assert any("~" in record["sessionId"] for record in found)


async def test_simulated_traffic_needs_the_platform_secret(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_AGORA_NCS_SECRET"):
        next(webhook_requests("agora", settings, seed=1, sessions=1, epoch_ms=0, now=time.time))
