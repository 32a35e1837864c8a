"""Other platforms' webhooks, as pure code (CONTRACT section 11): room names escaped into
session ids and back, each platform's signature checked the way the platform signs (with the
platforms' own SDKs where they have one), and each body translated into a native body that
decodes under the contract's rules."""

from __future__ import annotations

import itertools
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

import orjson
import pytest
from google.protobuf.json_format import MessageToJson
from hypothesis import given
from hypothesis import strategies as st
from livekit.api import AccessToken, TokenVerifier, WebhookReceiver
from livekit.protocol.models import DisconnectReason, ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent
from twilio.request_validator import RequestValidator

from service.errors import ConfigurationError, RejectCode, RejectedInput
from service.events import Event, EventType, Ignored, Source, decode, is_session_id
from service.platforms import agora, livekit, twilio
from service.platforms.escaping import escape_session_id, unescape_session_id
from service.platforms.signatures import BadSignature
from service.settings import load_settings
from service.simulation.webhook_traffic import webhook_requests

KEY, SECRET = "APIkey123", "livekit-secret-of-at-least-32-bytes"
# Every DisconnectReason LiveKit sends, and the native reason it becomes.
LIVEKIT_REASONS = {
    DisconnectReason.CLIENT_INITIATED: "clientDisconnected",
    DisconnectReason.PARTICIPANT_REMOVED: "forceDisconnected",
    DisconnectReason.DUPLICATE_IDENTITY: "forceDisconnected",
    DisconnectReason.ROOM_DELETED: "forceDisconnected",
    DisconnectReason.ROOM_CLOSED: "forceDisconnected",
    DisconnectReason.SERVER_SHUTDOWN: "forceDisconnected",
    DisconnectReason.SIGNAL_CLOSE: "networkDisconnected",
    DisconnectReason.JOIN_FAILURE: "networkDisconnected",
    DisconnectReason.UNKNOWN_REASON: "networkDisconnected",
}


# Escaping ------------------------------------------------------------------------------------


@given(st.text())
def test_escaping_round_trips(name: str) -> None:
    escaped = escape_session_id(name)
    assert unescape_session_id(escaped) == name
    assert set(escaped) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=:~")


@given(st.text(alphabet="ABCxyz019-_=:", min_size=1, max_size=256))
def test_a_valid_name_without_a_tilde_is_kept(name: str) -> None:
    assert escape_session_id(name) == name


@pytest.mark.parametrize(
    ("name", "session_id"),
    [
        ("my room", "my~20room"),
        ("Sala de reunión", "Sala~20de~20reuni~C3~B3n"),
        ("Ана", "~D0~90~D0~BD~D0~B0"),
        ("a~b", "a~7Eb"),
        ("plain-Room_1=:", "plain-Room_1=:"),
        ("dots.and/slashes", "dots~2Eand~2Fslashes"),
    ],
)
def test_escaping_examples(name: str, session_id: str) -> None:
    assert escape_session_id(name) == session_id
    assert unescape_session_id(session_id) == name


@pytest.mark.parametrize("bad", ["a~", "a~7", "a~7e", "a~ZZ", "~FF"])
def test_unescaping_refuses_what_no_escaping_gives(bad: str) -> None:
    with pytest.raises(ValueError, match=r"hex digits|can't decode"):
        unescape_session_id(bad)


# LiveKit -------------------------------------------------------------------------------------


def livekit_body(event: str = "participant_joined", **participant: Any) -> bytes:
    info = ParticipantInfo(
        sid="PA_abc",
        identity="ana",
        joined_at=1_732_699_990,
        joined_at_ms=1_732_699_990_123,
        metadata="name=Ana",
        **participant,
    )
    webhook = WebhookEvent(
        event=event, id="EV_x1", created_at=1_732_700_000, room=Room(sid="RM_1", name="Sala de reunión"),
        participant=info,
    )  # fmt: skip
    return MessageToJson(webhook).encode()


def livekit_token(raw: bytes, secret: str = SECRET, ttl: float | None = None) -> str:
    import base64
    import datetime
    import hashlib

    token = AccessToken(KEY, secret).with_sha256(base64.b64encode(hashlib.sha256(raw).digest()).decode())
    if ttl is not None:
        token = token.with_ttl(datetime.timedelta(seconds=ttl))
    return token.to_jwt()


def test_livekit_signature_of_the_sdk_is_accepted_and_ours_is_accepted_by_the_sdk() -> None:
    raw = livekit_body()
    livekit.verify(livekit_token(raw), raw, KEY, SECRET, time.time())
    ours = livekit.sign(raw, KEY, SECRET, int(time.time()))
    received = WebhookReceiver(TokenVerifier(KEY, SECRET)).receive(raw.decode(), ours)
    assert received.id == "EV_x1"


@pytest.mark.parametrize(
    "case", ["missing", "wrong secret", "tampered body", "expired", "not yet", "other key", "garbage"]
)
def test_livekit_refusals(case: str) -> None:
    raw = livekit_body()
    now = time.time()
    header: str | None = livekit_token(raw)
    body, key = raw, KEY
    if case == "missing":
        header = None
    elif case == "wrong secret":
        header = livekit_token(raw, "another-secret-of-at-least-32-bytes")
    elif case == "tampered body":
        body = raw.replace(b"ana", b"eve")
    elif case == "expired":
        header = livekit_token(raw, ttl=1)
        now += 120
    elif case == "not yet":
        now -= 3600
    elif case == "other key":
        key = "APIother"
    else:
        header = "not.a.token"
    with pytest.raises(BadSignature) as caught:
        livekit.verify(header, body, key, SECRET, now)
    assert caught.value.field == "Authorization"


@given(st.text(max_size=300))
def test_any_authorization_header_is_a_token_or_a_bad_signature(header: str) -> None:
    with pytest.raises(BadSignature):
        livekit.verify(header, b"{}", KEY, SECRET, time.time())


@given(st.lists(st.text(max_size=40), min_size=3, max_size=3))
def test_any_three_parts_are_a_token_or_a_bad_signature(parts: list[str]) -> None:
    with pytest.raises(BadSignature):
        livekit.verify(".".join(parts), b"{}", KEY, SECRET, time.time())


def native_event(body: dict[str, Any] | Ignored) -> Event:
    assert isinstance(body, dict)
    event = decode(orjson.dumps(body))
    assert isinstance(event, Event)
    return event


def test_livekit_join_and_leaves() -> None:
    joined = native_event(livekit.to_native(livekit_body()))
    assert joined == Event(
        "EV_x1", EventType.CREATED, "Sala~20de~20reuni~C3~B3n", 1_732_700_000_000, "PA_abc",
        1_732_699_990_123, "name=Ana", None, Source.LIVEKIT,
    )  # fmt: skip
    for value, reason in LIVEKIT_REASONS.items():
        for kind in ("participant_left", "participant_connection_aborted"):
            left = native_event(livekit.to_native(livekit_body(kind, disconnect_reason=value)))
            assert (left.type, left.reason, left.source) == (EventType.DESTROYED, reason, Source.LIVEKIT)
            vendor = None if value == DisconnectReason.UNKNOWN_REASON else DisconnectReason.Name(value)
            assert left.vendor_reason == vendor


def test_livekit_other_events_are_ignored_and_unknown_fields_too() -> None:
    assert livekit.to_native(b'{"event": "room_started", "room": {"name": "r"}}') == Ignored("room_started")
    document = orjson.loads(livekit_body())
    document["somethingNew"] = {"x": 1}
    document["participant"]["somethingElse"] = 2
    assert native_event(livekit.to_native(orjson.dumps(document))).id == "EV_x1"


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b"{not json", RejectCode.MALFORMED_JSON, None),
        (b"[]", RejectCode.INVALID_FIELD, None),
        (b'{"id": "EV_1"}', RejectCode.INVALID_FIELD, "event"),
        (
            b'{"event": "participant_joined", "id": "EV_1", "createdAt": "1"}',
            RejectCode.INVALID_FIELD,
            "room",
        ),
        (
            b'{"event": "participant_joined", "id": "EV_1", "createdAt": "1", "room": {"name": 5}}',
            RejectCode.INVALID_FIELD,
            "room.name",
        ),
        (
            b'{"event": "participant_joined", "id": "EV_1", "createdAt": "1", "room": {"name": "r"}}',
            RejectCode.INVALID_FIELD,
            "participant",
        ),
        (
            b'{"event": "participant_joined", "id": "EV_1", "createdAt": "x", "room": {"name": "r"},'
            b' "participant": {"sid": "PA"}}',
            RejectCode.INVALID_FIELD,
            "createdAt",
        ),
    ],
)
def test_livekit_bodies_that_livekit_does_not_send(raw: bytes, code: RejectCode, field: str | None) -> None:
    with pytest.raises(RejectedInput) as caught:
        livekit.to_native(raw)
    assert (caught.value.code, caught.value.field) == (code, field)


# Twilio --------------------------------------------------------------------------------------

URL = "https://ledger.example.com/v1/callbacks/twilio"
TOKEN = "twilio-auth-token"


def twilio_params(event: str = "participant-connected", **extra: str) -> dict[str, str]:
    params = {
        "AccountSid": "AC123",
        "RoomName": "Daily stand-up ~ team",
        "RoomSid": "RM123",
        "RoomStatus": "in-progress",
        "RoomType": "group",
        "StatusCallbackEvent": event,
        "Timestamp": "2024-11-27T09:33:20.123Z",
        "ParticipantSid": "PA456",
        "ParticipantStatus": "connected",
        "ParticipantIdentity": "ana",
        "SequenceNumber": "1",
    }
    params.update(extra)
    return params


def twilio_native(raw: bytes) -> dict[str, Any] | Ignored:
    return twilio.to_native(raw, twilio.form(raw))


def test_twilio_signature_matches_the_sdk() -> None:
    params = twilio_params()
    raw = urlencode(params).encode()
    expected = RequestValidator(TOKEN).compute_signature(URL, params)
    assert twilio.signature(URL, twilio.form(raw), TOKEN) == expected
    twilio.verify(expected, URL, twilio.form(raw), TOKEN)
    for wrong in (None, "", RequestValidator("other").compute_signature(URL, params)):
        with pytest.raises(BadSignature) as caught:
            twilio.verify(wrong, URL, twilio.form(raw), TOKEN)
        assert caught.value.field == "X-Twilio-Signature"
    tampered = twilio.form(raw.replace(b"ana", b"eve"))
    with pytest.raises(BadSignature):
        twilio.verify(expected, URL, tampered, TOKEN)


@given(
    st.one_of(
        st.text(alphabet="ab=&+%2Fé~ 0", max_size=40).map(lambda text: text.encode()),
        st.binary(max_size=40),
        st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5).map(
            lambda params: urlencode(params).encode()
        ),
    )
)
def test_twilio_form_reads_what_parse_qs_reads(raw: bytes) -> None:
    assert twilio.form(raw) == parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)


def test_twilio_connect_and_disconnect() -> None:
    connected = native_event(twilio_native(urlencode(twilio_params()).encode()))
    assert connected == Event(
        twilio.event_id("RM123", "PA456", "participant-connected"), EventType.CREATED,
        "Daily~20stand-up~20~7E~20team", 1_732_700_000_123,
        "PA456", 1_732_700_000_123, "ana", None, Source.TWILIO,
    )  # fmt: skip
    left = native_event(
        twilio_native(urlencode(twilio_params("participant-disconnected", ParticipantDuration="60")).encode())
    )
    assert (left.type, left.reason, left.vendor_reason) == (EventType.DESTROYED, "clientDisconnected", None)
    assert left.creation_time == left.timestamp - 60_000
    assert left.id != connected.id
    assert left.id.startswith("twilio:")
    assert twilio_native(b"StatusCallbackEvent=room-created&RoomName=r") == Ignored("room-created")


@pytest.mark.parametrize(
    ("drop", "value", "field"),
    [
        ("RoomName", None, "RoomName"),
        ("ParticipantSid", None, "ParticipantSid"),
        ("Timestamp", "yesterday", "Timestamp"),
    ],
)
def test_twilio_bodies_that_twilio_does_not_send(drop: str, value: str | None, field: str) -> None:
    params = twilio_params()
    if value is None:
        del params[drop]
    else:
        params[drop] = value
    with pytest.raises(RejectedInput) as caught:
        twilio_native(urlencode(params).encode())
    assert caught.value.field == field


# Agora ---------------------------------------------------------------------------------------


def test_agora_signature_by_its_documented_algorithm() -> None:
    # HMAC-SHA256 of the raw body with the NCS secret, as lower-case hex; the literal was
    # computed once, so a change of algorithm fails here.
    raw = b'{"noticeId":"n1","eventType":103}'
    assert (
        agora.signature(raw, "ncs-secret")
        == "38c96a91603f4911826669a350a44698db7c36eab2b0cc9977cd4248f9292293"
    )
    agora.verify("38c96a91603f4911826669a350a44698db7c36eab2b0cc9977cd4248f9292293", raw, "ncs-secret")
    agora.verify("38C96A91603F4911826669A350A44698DB7C36EAB2B0CC9977CD4248F9292293", raw, "ncs-secret")
    for header, body in ((None, raw), ("00" * 32, raw), (agora.signature(raw, "ncs-secret"), raw + b" ")):
        with pytest.raises(BadSignature) as caught:
            agora.verify(header, body, "ncs-secret")
        assert caught.value.field == "Agora-Signature-V2"


def agora_body(event_type: int, **payload: Any) -> bytes:
    base = {"channelName": "canal ñ", "uid": 12121212, "platform": 1, "clientSeq": 1, "ts": 1_732_700_000}
    base.update(payload)
    return orjson.dumps(
        {"noticeId": f"2000001428:4330:{event_type}", "productId": 1, "eventType": event_type,
         "notifyMs": 1_732_700_000_456, "payload": base}
    )  # fmt: skip


def test_agora_joins_and_leaves() -> None:
    for kind in (103, 105, 107):
        joined = native_event(agora.to_native(agora_body(kind, account="ana")))
        assert (joined.type, joined.session_id, joined.connection_id) == (
            EventType.CREATED,
            "canal~20~C3~B1",
            "12121212",
        )
        assert (joined.timestamp, joined.creation_time, joined.data) == (1_732_700_000_000,) * 2 + ("ana",)
    for kind in (104, 106, 108):
        reasons = {
            1: "clientDisconnected",
            3: "forceDisconnected",
            2: "networkDisconnected",
            999: "networkDisconnected",
        }
        for vendor, reason in reasons.items():
            left = native_event(agora.to_native(agora_body(kind, reason=vendor, duration=30)))
            assert (left.type, left.reason) == (EventType.DESTROYED, reason)
            assert left.vendor_reason == str(vendor)
            assert left.creation_time == 1_732_699_970_000
            assert left.source is Source.AGORA
    assert agora.to_native(agora_body(101)) == Ignored("101")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"noticeId": "n", "payload": {}}', "eventType"),
        (b'{"noticeId": "n", "eventType": 103}', "payload"),
        (b'{"noticeId": "n", "eventType": 103, "payload": {"uid": 1, "ts": 1}}', "payload.channelName"),
        (
            b'{"noticeId": "n", "eventType": 103, "payload": {"channelName": "c", "uid": "x", "ts": 1}}',
            "payload.uid",
        ),
        (
            b'{"noticeId": "n n", "eventType": 103, "payload": {"channelName": "c", "uid": 1, "ts": 1}}',
            "noticeId",
        ),
    ],
)
def test_agora_bodies_that_agora_does_not_send(raw: bytes, field: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        agora.to_native(raw)
    assert caught.value.field == field


def test_a_room_name_too_long_once_escaped_names_the_platform_field() -> None:
    with pytest.raises(RejectedInput) as caught:
        agora.to_native(agora_body(103, channelName="é" * 100))
    assert caught.value.field == "payload.channelName"
    assert is_session_id(escape_session_id("é" * 42))


# Settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"twilio_auth_token": "t"}, "LEDGER_PUBLIC_URL"),
        ({"twilio_auth_token": "t", "public_url": "ledger.example.com"}, "LEDGER_PUBLIC_URL"),
        ({"livekit_api_secret": "s"}, "LEDGER_LIVEKIT_API_KEY"),
    ],
)
def test_a_platform_secret_without_what_it_needs_is_a_configuration_error(
    given: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        load_settings(**given)
    complete = load_settings(twilio_auth_token="t", public_url="https://ledger.example.com")
    assert complete.public_url == "https://ledger.example.com"


@pytest.mark.parametrize("platform", ["livekit", "twilio", "agora"])
def test_simulated_traffic_of_two_seeds_shares_no_event_id(platform: str) -> None:
    """Two `connledger simulate --platform` runs with different seeds are other events: none of
    them is taken for a retry of the other's (same id) or refused as one with another body."""
    settings = load_settings(
        livekit_api_key="APIkey",
        livekit_api_secret="a-livekit-secret-0123456789abcdef",
        twilio_auth_token="0123456789abcdef0123456789abcdef",
        public_url="https://ledger.example.com",
        agora_ncs_secret="an-agora-secret",
    )

    def ids(seed: int) -> set[str]:
        requests = webhook_requests(
            platform, settings, seed=seed, sessions=5, epoch_ms=1_732_700_000_000, now=time.time
        )
        found = set()
        for request in itertools.islice(requests, 200):
            if platform == "livekit":
                native = livekit.to_native(request.body)
            elif platform == "twilio":
                native = twilio.to_native(request.body, twilio.form(request.body))
            else:
                native = agora.to_native(request.body)
            if not isinstance(native, Ignored):
                found.add(native["id"])
        return found

    first, second = ids(1), ids(2)
    assert len(first) > 100
    assert len(second) > 100
    assert not first & second
