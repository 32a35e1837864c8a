"""Every rule of CONTRACT section 1, and the order in which they are checked."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.errors import RejectCode, RejectedInput
from service.events import MAX_BODY_BYTES, Event, EventType, Ignored, Source, decode, vonage_event_id
from tests.helpers import CREATED, DESTROYED, body


def rejects(raw: bytes, code: RejectCode, field: str | None, subject: str | None = None) -> RejectedInput:
    with pytest.raises(RejectedInput) as caught:
        decode(raw, subject)
    assert caught.value.code is code, caught.value.message
    assert caught.value.field == field
    assert caught.value.message
    return caught.value


def with_changes(base: dict[str, Any], **changes: Any) -> bytes:
    document = orjson.loads(orjson.dumps(base))
    for path, value in changes.items():
        target = document
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is ...:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return orjson.dumps(document)


def test_a_valid_native_destroy_decodes_to_an_event() -> None:
    event = decode(orjson.dumps(body("e-1", DESTROYED, "S", "C", reason="networkDisconnected")))
    assert event == Event(
        "e-1",
        EventType.DESTROYED,
        "S",
        1_732_700_000_123,
        "C",
        1_732_699_990_000,
        "name=Ana",
        "networkDisconnected",
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": ...}, "id"),
        ({"id": ""}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "slash/no"}, "id"),
        ({"id": 12}, "id"),
        ({"sessionId": ...}, "sessionId"),
        ({"sessionId": ""}, "sessionId"),
        ({"sessionId": "a.b"}, "sessionId"),
        ({"sessionId": "a*"}, "sessionId"),
        ({"sessionId": "a>"}, "sessionId"),
        ({"sessionId": "x" * 257}, "sessionId"),
        ({"timestamp": ...}, "timestamp"),
        ({"timestamp": 1.5}, "timestamp"),
        ({"timestamp": "1732700000123"}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"timestamp": -1}, "timestamp"),
        ({"connection": ...}, "connection"),
        ({"connection": "c1"}, "connection"),
        ({"connection": [1]}, "connection"),
        ({"connection__connectionId": ...}, "connection.connectionId"),
        ({"connection__connectionId": ""}, "connection.connectionId"),
        ({"connection__connectionId": "x" * 257}, "connection.connectionId"),
        ({"connection__connectionId": 5}, "connection.connectionId"),
        ({"connection__connectionId": "nul\x00"}, "connection.connectionId"),
        ({"connection__creationTime": ...}, "connection.creationTime"),
        ({"connection__creationTime": "now"}, "connection.creationTime"),
        ({"connection__data": "x" * 1001}, "connection.data"),
        ({"connection__data": 7}, "connection.data"),
        ({"reason": "clientDisconnected"}, "reason"),
    ],
)
def test_each_field_rule_of_a_create_names_its_field(changes: dict[str, Any], field: str) -> None:
    rejects(with_changes(body("e-1"), **changes), RejectCode.INVALID_FIELD, field)


@pytest.mark.parametrize("reason", [..., None, "", "timeout", "CLIENTDISCONNECTED", 3])
def test_a_destroy_needs_one_of_the_three_reasons(reason: Any) -> None:
    rejects(with_changes(body("e-1", DESTROYED), reason=reason), RejectCode.INVALID_FIELD, "reason")


def test_limits_count_characters_not_bytes() -> None:
    event = decode(with_changes(body("e-1"), connection__data="é" * 1000))
    assert isinstance(event, Event)
    assert event.data == "é" * 1000
    assert decode(with_changes(body("e-1"), connection__connectionId="ü" * 256)).connection_id == "ü" * 256  # type: ignore[union-attr]


def test_data_absent_and_null_are_the_same_and_unknown_fields_are_ignored() -> None:
    absent = decode(with_changes(body("e-1"), connection__data=...))
    null = decode(with_changes(body("e-1"), connection__data=None, extra={"x": 1}))
    assert absent == null
    assert isinstance(absent, Event)
    assert absent.data is None


def test_content_ignores_key_order_and_spacing() -> None:
    compact = orjson.dumps(body("e-1"))
    spaced = (
        b'{ "connection" : {"data":"name=Ana", "creationTime":1732699990000,"connectionId":"c1"},\n'
        b' "timestamp": 1732700000123, "sessionId":"s1", "type":"connectionCreated", "id":"e-1"}'
    )
    first, second = decode(compact), decode(spaced)
    assert isinstance(first, Event)
    assert isinstance(second, Event)
    assert first.content() == second.content()


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"id": "x",}', b"\xff\xfe", b'"\\ud800"'])
def test_broken_json_is_malformed_json(raw: bytes) -> None:
    rejects(raw, RejectCode.MALFORMED_JSON, None)


@pytest.mark.parametrize("raw", [b"[]", b"3", b'"text"', b"null", b"[{}]"])
def test_json_that_is_not_an_object_breaks_a_field_rule(raw: bytes) -> None:
    rejects(raw, RejectCode.INVALID_FIELD, None)


def test_type_missing_or_not_a_string_is_invalid_field_and_unknown_string_is_unknown_type() -> None:
    rejects(with_changes(body("e-1"), type=...), RejectCode.INVALID_FIELD, "type")
    rejects(with_changes(body("e-1"), type=1), RejectCode.INVALID_FIELD, "type")
    rejects(with_changes(body("e-1"), type="streamCreated"), RejectCode.UNKNOWN_TYPE, "type")


def test_size_is_checked_first_then_json_then_type_then_fields_then_subject() -> None:
    oversized = b"{" + b" " * MAX_BODY_BYTES + b"}"
    rejects(oversized, RejectCode.TOO_LARGE, None)
    rejects(b"{" * (MAX_BODY_BYTES + 1), RejectCode.TOO_LARGE, None)
    # An unknown type wins over a broken field; a broken field wins over a subject mismatch.
    rejects(with_changes(body("e-1"), type="nope", id=...), RejectCode.UNKNOWN_TYPE, "type")
    rejects(
        with_changes(body("e-1"), id=...),
        RejectCode.INVALID_FIELD,
        "id",
        subject="connections.other.connectionDestroyed",
    )


def test_a_body_of_exactly_64_kib_is_not_too_large() -> None:
    document = body("e-1")
    raw = orjson.dumps(document)
    padded = raw[:-1] + b"," + b'"pad":"' + b"x" * (MAX_BODY_BYTES - len(raw) - 9) + b'"}'
    assert len(padded) == MAX_BODY_BYTES
    assert isinstance(decode(padded), Event)


@pytest.mark.parametrize(
    ("subject", "field"),
    [
        ("connections.s2.connectionCreated", "sessionId"),
        ("connections.s1.connectionDestroyed", "type"),
        ("connections.s1", "subject"),
        ("connections.s1.connectionCreated.extra", "subject"),
        ("other.s1.connectionCreated", "subject"),
    ],
)
def test_subject_and_body_must_agree(subject: str, field: str) -> None:
    rejects(orjson.dumps(body("e-1")), RejectCode.SUBJECT_MISMATCH, field, subject=subject)


def test_a_matching_subject_is_accepted() -> None:
    assert isinstance(decode(orjson.dumps(body("e-1")), "connections.s1.connectionCreated"), Event)


VONAGE = {
    "sessionId": "2_MX40NTU0NjQ3Mn5-fg",
    "projectId": "123456",
    "event": "connectionDestroyed",
    "reason": "clientDisconnected",
    "timestamp": 1_470_258_860_571,
    "connection": {"id": "c3f1a2", "createdAt": 1_470_257_688_143, "data": "TOKENDATA"},
}


def test_a_vonage_callback_gets_a_deterministic_id_and_keeps_its_reason() -> None:
    first = decode(orjson.dumps(VONAGE))
    retry = decode(orjson.dumps(dict(reversed(list(VONAGE.items())))))
    assert isinstance(first, Event)
    assert first == retry
    assert first.id == vonage_event_id(
        "2_MX40NTU0NjQ3Mn5-fg", "c3f1a2", "connectionDestroyed", 1_470_258_860_571
    )
    assert first.source is Source.VONAGE
    assert (first.connection_id, first.creation_time, first.data) == (
        "c3f1a2",
        1_470_257_688_143,
        "TOKENDATA",
    )
    assert first.project_id == "123456"
    # Vonage's reasons are recorded as sent, not checked against the native three.
    other = decode(with_changes(VONAGE, reason="mediaStopped"))
    assert isinstance(other, Event)
    assert other.reason == "mediaStopped"
    assert other.id == first.id
    # So are its reason and its data, at any length the body allows (a native body's data is
    # capped at OpenTok's 1000 characters).
    long = decode(with_changes(VONAGE, reason="r" * 5000, connection__data="d" * 5000))
    assert isinstance(long, Event)
    assert (long.reason, long.data) == ("r" * 5000, "d" * 5000)


def test_a_vonage_callback_at_another_time_is_another_event() -> None:
    first = decode(orjson.dumps(VONAGE))
    later = decode(with_changes(VONAGE, timestamp=VONAGE["timestamp"] + 1))  # type: ignore[operator]
    assert isinstance(first, Event)
    assert isinstance(later, Event)
    assert first.id != later.id


@pytest.mark.parametrize("kind", ["streamCreated", "sessionCreated", "streamDestroyed", "archiveStatus"])
def test_other_vonage_events_are_ignored_whatever_the_subject(kind: str) -> None:
    raw = with_changes(VONAGE, event=kind, connection=...)
    assert decode(raw, "connections.x.connectionCreated") == Ignored(kind)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event": 3}, "event"),
        ({"sessionId": "bad session"}, "sessionId"),
        ({"timestamp": "x"}, "timestamp"),
        ({"connection": ...}, "connection"),
        ({"connection__id": ...}, "connection.id"),
        ({"connection__createdAt": 1.5}, "connection.createdAt"),
        ({"connection__data": 7}, "connection.data"),
        ({"reason": 5}, "reason"),
    ],
)
def test_vonage_field_rules(changes: dict[str, Any], field: str) -> None:
    rejects(with_changes(VONAGE, **changes), RejectCode.INVALID_FIELD, field)


def test_a_vonage_connection_event_must_match_its_subject() -> None:
    raw = orjson.dumps(VONAGE)
    rejects(
        raw, RejectCode.SUBJECT_MISMATCH, "type", subject="connections.2_MX40NTU0NjQ3Mn5-fg.connectionCreated"
    )
    assert isinstance(decode(raw, "connections.2_MX40NTU0NjQ3Mn5-fg.connectionDestroyed"), Event)


def test_to_native_round_trips() -> None:
    event = decode(orjson.dumps(body("e-9", DESTROYED, reason="forceDisconnected")))
    assert isinstance(event, Event)
    assert decode(orjson.dumps(event.to_native())) == event
    created = decode(orjson.dumps(body("e-8", CREATED, data=None)))
    assert isinstance(created, Event)
    assert decode(orjson.dumps(created.to_native())) == created


def test_source_and_vendor_reason_are_optional_and_part_of_the_content() -> None:
    plain = decode(orjson.dumps(body("e-7", DESTROYED, reason="forceDisconnected")))
    explicit = decode(
        orjson.dumps(
            {**body("e-7", DESTROYED, reason="forceDisconnected"), "source": None, "vendorReason": None}
        )
    )
    assert isinstance(plain, Event)
    assert isinstance(explicit, Event)
    assert plain.source is Source.NATIVE
    assert plain.vendor_reason is None
    assert plain == explicit
    for source in Source:
        document = {
            **body("e-7", DESTROYED, reason="forceDisconnected"),
            "source": source.value,
            "vendorReason": "X",
        }
        event = decode(orjson.dumps(document))
        assert isinstance(event, Event)
        assert (event.source, event.vendor_reason) == (source, "X")
        assert decode(orjson.dumps(event.to_native())) == event
        assert event.content() != plain.content()
    created = decode(orjson.dumps({**body("e-6", CREATED), "source": "livekit"}))
    assert isinstance(created, Event)
    assert created.source is Source.LIVEKIT


@pytest.mark.parametrize(
    ("type_", "changes", "field"),
    [
        (CREATED, {"source": "zoom"}, "source"),
        (CREATED, {"source": 1}, "source"),
        (CREATED, {"source": "Native"}, "source"),
        (CREATED, {"vendorReason": "CLIENT_INITIATED"}, "vendorReason"),
        (DESTROYED, {"vendorReason": 1}, "vendorReason"),
        (DESTROYED, {"vendorReason": "x" * 257}, "vendorReason"),
        (DESTROYED, {"vendorReason": "a\x00b"}, "vendorReason"),
    ],
)
def test_source_and_vendor_reason_rules(type_: str, changes: dict[str, Any], field: str) -> None:
    rejects(with_changes(body("e-5", type_), **changes), RejectCode.INVALID_FIELD, field)


def test_synthetic_ids_are_deterministic_and_within_the_id_rule() -> None:
    from service.events import Origin, is_event_id, synthetic_event_id

    first = synthetic_event_id(Origin.EXPIRY, "s1", "c1", 7)
    assert first == synthetic_event_id(Origin.EXPIRY, "s1", "c1", 7)
    assert first != synthetic_event_id(Origin.EXPIRY, "s1", "c1", 8)
    assert first.startswith("expiry:")
    assert is_event_id(first)
    assert is_event_id(synthetic_event_id(Origin.RECONCILE, "s" * 256, "c" * 256, 2**63 - 1))
