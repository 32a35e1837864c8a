"""The client's pure parts (service/client.py), without NATS: answers and refusals into types,
paged replay, a watch's hand-off (duplicates dropped, gaps filled from the replay) and its
binary search of the stream, and that it imports nothing of the server side."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

import service
from service import client as client_module
from service.client import (
    Connection,
    LedgerClient,
    LedgerClientError,
    LedgerRequestError,
    Record,
    Watch,
)

SESSION = "room-7"


def _record(position: int, sequence: int = 1, session: str = SESSION, **changes: Any) -> dict[str, Any]:
    document = {
        "position": position,
        "sequence": sequence,
        "id": f"e{position}",
        "type": "connectionCreated",
        "sessionId": session,
        "timestamp": 1_733_390_400_000 + position,
        "recordedAt": 1_733_390_400_009 + position,
        "connection": {"connectionId": f"c{position}", "creationTime": 1_733_390_399_000, "data": None},
        "reason": None,
        "source": "livekit",
        "vendorReason": "CLIENT_INITIATED",
        "origin": "reconcile",
        "defaultPrevented": True,
        "preventedBy": "skip_recorders",
        "count": 0,
    }
    return {**document, **changes}


def test_a_record_is_read_from_its_json_and_later_fields_are_ignored() -> None:
    record = Record.from_json({**_record(1042, 7, type="connectionDestroyed"), "somethingNew": 1})
    assert (record.position, record.sequence, record.id) == (1042, 7, "e1042")
    assert (record.session_id, record.type) == (SESSION, "connectionDestroyed")
    assert (record.timestamp, record.recorded_at) == (1_733_390_401_042, 1_733_390_401_051)
    assert record.connection == Connection("c1042", 1_733_390_399_000, None)
    assert (record.source, record.vendor_reason, record.origin) == (
        "livekit",
        "CLIENT_INITIATED",
        "reconcile",
    )
    assert (record.default_prevented, record.prevented_by, record.count) == (True, "skip_recorders", 0)


def test_an_error_body_is_a_typed_error_and_an_answer_is_not() -> None:
    body = orjson.dumps({"error": "invalid_field", "message": "at is beyond the head", "field": "at"})
    with pytest.raises(LedgerRequestError) as refused:
        client_module._answer(body)
    assert (refused.value.error, refused.value.message, refused.value.field) == (
        "invalid_field",
        "at is beyond the head",
        "at",
    )
    assert not refused.value.transient
    assert LedgerRequestError("unavailable", "the database", None).transient
    answer = {"sessionId": SESSION, "count": 2, "position": 9}
    assert client_module._answer(orjson.dumps(answer)) == answer
    with pytest.raises(LedgerClientError):
        client_module._answer(b"[1, 2]")


def test_options_leave_out_what_is_not_given() -> None:
    assert client_module._options(at=None, asOf=None) == b""
    assert orjson.loads(client_module._options(at=0, asOf=None, minPosition=5)) == {"at": 0, "minPosition": 5}


def test_urls_and_session_ids_are_checked_before_anything_is_sent() -> None:
    assert LedgerClient("nats://a:4222, nats://b:4222")._servers == ["nats://a:4222", "nats://b:4222"]
    ledger = LedgerClient(["nats://a:4222"])
    with pytest.raises(LedgerClientError, match="not open"):
        ledger.nc  # noqa: B018
    for bad in ("a.b", "room*", "", "x" * 257):
        with pytest.raises(ValueError, match="not a session id"):
            ledger.watch(bad)


async def test_replay_asks_a_page_at_a_time_up_to_the_limit() -> None:
    ledger = LedgerClient("nats://nowhere:4222")
    asked: list[tuple[str | None, int, int]] = []
    ledger_positions = range(1, 26)

    async def page(session_id: str | None, after: int, limit: int) -> tuple[list[Record], int]:
        asked.append((session_id, after, limit))
        records = [Record.from_json(_record(p)) for p in ledger_positions if p > after][:limit]
        return records, records[-1].position if records else after

    ledger._replay_page = page  # type: ignore[method-assign]
    assert [r.position async for r in ledger.replay(after=3, page=10)] == list(range(4, 26))
    assert asked == [(None, 3, 10), (None, 13, 10), (None, 23, 10)]
    asked.clear()
    assert [r.position async for r in ledger.replay(SESSION, after=0, limit=12, page=5)] == list(range(1, 13))
    assert asked == [(SESSION, 0, 5), (SESSION, 5, 5), (SESSION, 10, 2)]


class FakeLedger:
    """A client whose replay answers from a list, and says what it was asked."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.asked: list[tuple[str | None, int, int | None]] = []

    async def replay(
        self, session_id: str | None = None, *, after: int = 0, limit: int | None = None
    ) -> AsyncIterator[Record]:
        self.asked.append((session_id, after, limit))
        chosen = [r for r in self.records if r.position > after and session_id in (None, r.session_id)]
        for record in chosen[:limit]:
            yield record


async def _take(watch: Watch, record: Record) -> list[int]:
    return [r.position async for r in watch._take(record)]


async def test_every_session_a_duplicate_is_dropped_and_a_gap_filled_from_the_replay() -> None:
    ledger = [Record.from_json(_record(p, p)) for p in range(1, 11)]
    fake = FakeLedger(ledger)
    watch = Watch(fake, None, after=3)  # type: ignore[arg-type]
    assert await _take(watch, ledger[3]) == [4]
    assert await _take(watch, ledger[3]) == []
    assert await _take(watch, ledger[1]) == []
    assert fake.asked == []
    assert await _take(watch, ledger[6]) == [5, 6, 7]
    assert fake.asked == [(None, 4, 2)]
    assert watch.position == 7


async def test_one_session_a_gap_is_found_by_its_sequence() -> None:
    # The session's records at positions 12, 15, 20 and 30 (sequences 2 to 5); others between.
    mine = {12: 2, 15: 3, 20: 4, 30: 5}
    ledger = [
        Record.from_json(_record(p, mine.get(p, 1), SESSION if p in mine else f"other-{p}"))
        for p in range(1, 31)
    ]
    fake = FakeLedger(ledger)
    watch = Watch(fake, SESSION, after=10)  # type: ignore[arg-type]
    # The first record after a snapshot: its sequence is not known, the replay says what is missing.
    assert await _take(watch, ledger[14]) == [12, 15]
    assert fake.asked == [(SESSION, 10, 4)]
    # The next sequence follows: nothing asked.
    assert await _take(watch, ledger[19]) == [20]
    assert len(fake.asked) == 1
    # The next position follows, whatever the sequence: nothing can be missing.
    watch = Watch(fake, SESSION, after=11)  # type: ignore[arg-type]
    assert await _take(watch, ledger[11]) == [12]
    assert len(fake.asked) == 1
    # A sequence skipped (a record the stream lost): filled.
    watch._yielded(ledger[14])
    assert await _take(watch, ledger[29]) == [20, 30]
    assert fake.asked[-1] == (SESSION, 15, 14)


class FakeStream:
    """A stream's sequences and the positions of their records (None: deleted)."""

    def __init__(self, first: int, positions: list[int | None]) -> None:
        self.first = first
        self.positions = positions
        self.looks = 0

    async def stream_info(self, name: str) -> Any:
        held = [p for p in self.positions if p is not None]
        last = self.first + len(self.positions) - 1
        return SimpleNamespace(state=SimpleNamespace(messages=len(held), first_seq=self.first, last_seq=last))

    async def get_msg(self, stream: str, seq: int, subject: str, next: bool) -> Any:
        assert next
        assert subject == "ledger.records.>"
        self.looks += 1
        for index in range(seq - self.first, len(self.positions)):
            position = self.positions[index]
            if position is not None:
                return SimpleNamespace(data=orjson.dumps({"position": position}))
        raise AssertionError("asked past the end")


async def _start(stream: FakeStream, after: int) -> int:
    watch = Watch(SimpleNamespace(stream="LEDGER"), None, after=after)  # type: ignore[arg-type]
    return await watch._start_sequence(stream)  # type: ignore[arg-type]


async def test_the_consumer_starts_at_the_first_record_after_the_position() -> None:
    # Sequences 101..1100 hold positions 501..1500.
    stream = FakeStream(101, list(range(501, 1501)))
    assert await _start(stream, 999) == 101 + 499  # position 1000
    assert stream.looks <= 12, "a binary search, not a scan"
    assert await _start(stream, 0) == 101  # before the stream's first record: its first
    assert await _start(stream, 1500) == 1101  # at the head: the next one stored
    assert await _start(stream, 5000) == 1101
    assert await _start(FakeStream(7, [None, None]), 3) == 9  # empty


async def test_deleted_messages_and_records_published_twice_do_not_mislead_the_search() -> None:
    # Positions 1-5, 3-5 again (a relay restarted past the duplicate window), then 6-8; some deleted.
    stream = FakeStream(1, [1, 2, None, 4, 5, 3, 4, 5, None, 7, 8])
    start = await _start(stream, 5)
    # Whatever it picks, nothing after position 5 comes before it, and it is at or before 6's place.
    assert start <= 9
    assert all(p is None or p <= 5 for p in stream.positions[: start - 1])
    assert await _start(stream, 1) == 2


def test_the_client_imports_nothing_of_the_server_side() -> None:
    root = Path(service.__file__).parent
    tree = ast.parse((root / "client.py").read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("service")
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("service")
    }
    assert imported == {"service.events", "service.subjects"}
    assert "faststream" not in (root / "client.py").read_text()
