"""The typed client (service/client.py) against `connledger serve` on a real nats-server, on SQLite
and PostgreSQL: its queries as of a position or a time and their typed refusals; `watch` under
live ingest across a restart of the service (and so of its relay), compared record by record
with the ledger's replay over NATS and HTTP and between two clients; a watch across its NATS
server's death; and a watch over a history the stream no longer holds whole, whose memory does
not grow with what it yields."""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import nats
import orjson
import pytest
from nats.aio.client import Client

from service import client as client_module
from service.client import (
    Connections,
    Count,
    LedgerClient,
    LedgerClientError,
    LedgerRequestError,
    Record,
    ReplayError,
    Watch,
)
from service.events import Event, decode
from service.simulation.traffic import generate
from tests.e2e.conftest import NatsProcess, Service
from tests.e2e.natsutil import publish_all, replay, wait_for_head
from tests.reference import live_at, usage_by_fold


@pytest.fixture
def nats_url(own_nats: NatsProcess) -> str:
    """The services of these tests run on a server the test may kill and start again."""
    return own_nats.url


class Collector:
    """A watch read in a task of its own, everything it yields kept for the comparison."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.items: list[Connections | Record] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for item in self.watch:
            self.items.append(item)

    async def reaches(self, position: int, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while (self.watch.position or 0) < position:
            if self.task.done():
                self.task.result()  # its error, if it failed
                raise AssertionError("the watch ended")
            assert time.monotonic() < deadline, f"the watch is at {self.watch.position}, not {position}"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        # A watch whose client was closed under it ends with LedgerClientError.
        with contextlib.suppress(asyncio.CancelledError, LedgerClientError):
            await self.task
        await self.watch.aclose()


@pytest.fixture
async def watching() -> AsyncIterator[Callable[[Watch], Collector]]:
    """Reads a watch in a task; every one is stopped when the test ends."""
    started: list[Collector] = []

    def start(watch: Watch) -> Collector:
        started.append(Collector(watch))
        return started[-1]

    yield start
    for collector in started:
        await collector.stop()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """The test's own connection: it publishes the events and asks the service for its replay."""
    connection = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield connection
    await connection.close()


def _unique(lines: list[bytes]) -> int:
    return len({e.id for e in (decode(line) for line in lines) if isinstance(e, Event)})


def _first_session(lines: list[bytes]) -> str:
    return next(e.session_id for e in (decode(line) for line in lines) if isinstance(e, Event))


async def _ingested(nc: Client, lines: list[bytes], since: list[bytes] | None = None) -> int:
    """Publish `lines` (after `since`, published already): the head once all are appended."""
    expected = _unique([*(since or []), *lines])
    await publish_all(nc, lines)
    head = await wait_for_head(nc, expected, timeout=60)
    assert head == expected
    return head


async def _ledger(nc: Client) -> tuple[list[dict[str, Any]], list[Record]]:
    """The whole ledger from the service's own replay: as JSON, and as the client's records."""
    raw, _ = await replay(nc, {})
    return raw, [Record.from_json(r) for r in raw]


def _live(raw: list[dict[str, Any]], session: str, position: int) -> set[str]:
    """The session's connections as of `position`, by the tests' reference fold."""
    return set(live_at(raw, session, position)[1])


async def _caught_up(nc: Client, every: list[Collector], one_session: Collector, head: int) -> list[Record]:
    """Once the watches of every session have reached `head` and the session's watch its last
    record, all stopped: the ledger's records, the session's watch checked against them (its
    snapshot as of P by the reference fold, then its records after P, each once)."""
    for collector in every:
        await collector.reaches(head, seconds=60)
    raw, records = await _ledger(nc)
    assert [r.position for r in records] == list(range(1, head + 1))
    session = one_session.watch.session_id
    mine = [r for r in records if r.session_id == session]
    await one_session.reaches(mine[-1].position)
    for collector in (*every, one_session):
        await collector.stop()
    snapshot = one_session.items[0]
    assert isinstance(snapshot, Connections)
    assert snapshot.session_id == session
    assert {c.connection_id for c in snapshot.connections} == _live(raw, session, snapshot.position)
    assert one_session.items[1:] == [r for r in mine if r.position > snapshot.position]
    return records


@pytest.mark.timeout(120)
async def test_queries_answer_as_of_a_position_or_a_time_and_refusals_are_typed(
    service_factory: type[Service], nats_url: str, nc: Client
) -> None:
    service_factory()
    lines = list(generate(1500, seed=5, sessions=4))
    head = await _ingested(nc, lines)
    raw, records = await _ledger(nc)
    session = _first_session(lines)
    async with LedgerClient(nats_url) as ledger:
        assert [r async for r in ledger.replay()] == records
        mine = [r for r in records if r.session_id == session]
        middle = mine[len(mine) // 2]

        assert await ledger.count(session) == Count(session, mine[-1].count, head)
        at = await ledger.count(session, at=middle.position)
        assert at == Count(session, middle.count, middle.position)
        assert await ledger.count(session, at=0) == Count(session, 0, 0)
        assert await ledger.head() == head
        listed = await ledger.connections(session, at=middle.position)
        assert {c.connection_id for c in listed.connections} == _live(raw, session, middle.position)
        assert listed.count == middle.count == len(listed.connections)
        as_of = await ledger.connections(session, as_of=middle.recorded_at)
        expected = max(r.position for r in records if r.recorded_at <= middle.recorded_at)
        assert as_of.position == expected
        assert {c.connection_id for c in as_of.connections} == _live(raw, session, expected)

        usage = await ledger.usage(session)
        assert (usage.session_id, usage.position, usage.open) == (session, head, mine[-1].count)
        start, end = mine[0].timestamp, mine[len(mine) // 3].timestamp
        window = await ledger.usage(session, from_=start, to=end)
        assert window == client_module._usage({**usage_by_fold(raw, session, start, end), "position": head})
        assert window.connections > 0

        with pytest.raises(LedgerRequestError) as beyond:
            await ledger.count(session, at=head + 1000)
        assert (beyond.value.error, beyond.value.field) == ("invalid_field", "at")
        assert not beyond.value.transient
        with pytest.raises(LedgerRequestError) as both:
            await ledger.connections(session, at=1, as_of=1)
        assert both.value.field == "asOf"
        with pytest.raises(LedgerRequestError) as backwards:
            await ledger.usage(session, from_=10, to=5)
        assert backwards.value.field == "from"
        with pytest.raises(ReplayError) as refused:
            await anext(ledger.replay(after=-1))
        assert (refused.value.error, refused.value.field, refused.value.last) == ("invalid_field", "after", 0)
        with pytest.raises(ValueError, match="not a session id"):
            await ledger.count("not.a.session")

        # Paged replay: a session's records, a limit across pages.
        assert [r async for r in ledger.replay(session, page=50)] == mine
        assert [r async for r in ledger.replay(after=10, limit=250, page=100)] == records[10:260]


@pytest.mark.timeout(120)
async def test_watches_under_live_ingest_and_a_service_restart_match_the_replay_record_by_record(
    service_factory: type[Service], nats_url: str, nc: Client, watching: Callable[[Watch], Collector]
) -> None:
    service = service_factory()
    lines = list(generate(3000, seed=21, sessions=6))
    first, rest = lines[:600], lines[600:]
    async with LedgerClient(nats_url) as a, LedgerClient(nats_url) as b:
        started_at = await _ingested(nc, first)
        one_session = watching(a.watch(_first_session(first)))
        everything_a = watching(a.watch(None, after=0))
        everything_b = watching(b.watch(None, after=0))
        from_head = watching(b.watch())
        await from_head.reaches(started_at)

        # Live ingest while they watch; the service (and its relay) stopped and started again
        # part way, the watches reading on.
        for index in range(0, len(rest), 200):
            await publish_all(nc, rest[index : index + 200])
            if index == 1000:
                await everything_a.reaches(started_at + 1)
                assert await asyncio.to_thread(service.stop) == 0
                service = await asyncio.to_thread(service_factory)
            await asyncio.sleep(0.05)
        head = await wait_for_head(nc, _unique(lines))
        assert head == _unique(lines)
        records = await _caught_up(nc, [everything_a, everything_b, from_head], one_session, head)

        # Two clients, each watching every session from the start: the ledger, record by record.
        assert everything_a.items == records
        assert everything_b.items == records
        # From the head: every record after it.
        assert from_head.items == records[started_at:]
        # The client's replay and the HTTP edge's say the same.
        assert [r async for r in a.replay()] == records
        async with httpx.AsyncClient(base_url=service.http_url) as http:
            lines_out = (await http.get("/v1/events")).content.splitlines()
        assert [Record.from_json(orjson.loads(line)) for line in lines_out] == records


@pytest.mark.timeout(120)
async def test_a_watch_resumes_after_its_nats_server_dies_and_comes_back(
    service_factory: type[Service],
    own_nats: NatsProcess,
    nc: Client,
    watching: Callable[[Watch], Collector],
) -> None:
    service_factory()
    lines = list(generate(1600, seed=8, sessions=5))
    before, after = lines[:800], lines[800:]
    async with LedgerClient(own_nats.url, reconnect_time_wait=0.2) as ledger:
        everything = watching(ledger.watch(None, after=0))
        one_session = watching(ledger.watch(_first_session(lines)))
        await everything.reaches(await _ingested(nc, before))

        own_nats.kill()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(own_nats.start)
        deadline = time.monotonic() + 20
        while not (nc.is_connected and ledger.nc.is_connected):
            assert time.monotonic() < deadline, "no reconnect"
            await asyncio.sleep(0.05)
        await _ingested(nc, after, since=before)
        records = await _caught_up(nc, [everything], one_session, _unique(lines))
        assert everything.watch.resumes >= 1, "the watch never noticed its server died"
        assert everything.items == records


@pytest.mark.timeout(120)
async def test_a_watch_fills_what_the_stream_lost_from_the_replay_in_constant_memory(
    service_factory: type[Service], nats_url: str, nc: Client
) -> None:
    service_factory()
    head = await _ingested(nc, list(generate(6000, seed=13, sessions=12)))
    js = nc.jetstream()
    deadline = time.monotonic() + 30
    while (await js.stream_info("LEDGER")).state.messages < head:
        assert time.monotonic() < deadline, "the relay did not publish every record"
        await asyncio.sleep(0.05)
    # The stream's limits dropped its oldest records: it keeps the last 2,000 only.
    await js.purge_stream("LEDGER", keep=2000)
    assert (await js.stream_info("LEDGER")).state.messages == 2000
    _, records = await _ledger(nc)
    expected = iter(records)
    async with LedgerClient(nats_url) as ledger:
        tracemalloc.start()
        try:
            async with ledger.watch(None, after=0) as watch:
                async for item in watch:
                    assert item == next(expected)  # nothing kept here either
                    assert isinstance(item, Record)
                    if item.position == 1500:
                        early = tracemalloc.get_traced_memory()[0]
                    if item.position == head:
                        late = tracemalloc.get_traced_memory()[0]
                        break
        finally:
            tracemalloc.stop()
    # About 4,500 records yielded between the two looks (some 3 MB had they been kept).
    assert late - early < 256 * 1024, f"the watch's memory grew by {late - early} bytes"
    assert next(expected, None) is None
    assert watch.resumes == 0
