"""Records the LEDGER stream refuses. For good (larger than its max_msg_size): the relay
publishes every record before it, none after it, says which record and why, and stops there
instead of trying again and again. For a while (no stream takes the subject): the relay tries
again after pauses that grow, and goes on once the stream takes it. Against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httpx
import nats
import orjson
import pytest
from nats.js.api import StreamConfig

from service.commit_signal import CommitSignal
from service.ledger.checkpoints import read_checkpoint
from service.nats.relay import RELAY_CHECKPOINT, Relay
from service.pipeline.ledger_service import LedgerService
from tests.e2e.conftest import Service
from tests.e2e.natsutil import ledger_stream, publish_all, replay, wait_for_head
from tests.helpers import body, created

# Far above a small record, and below the large one with its headers.
MAX_MSG_SIZE = 900
LARGE_DATA = "x" * 1000  # as long as data may be (events.MAX_DATA_CHARS)
GAUGE = "ledger_relay_refused_position"


async def _until(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not reached in {seconds} s"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_a_record_refused_for_good_stops_the_relay_just_before_it(
    ledger: LedgerService, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.nats.relay")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="LEDGER", subjects=["ledger.records.>"], max_msg_size=MAX_MSG_SIZE)
    # Positions 1-10, the sixth too large for the stream.
    await ledger.pipeline.process(
        [created(f"e{n}", connection=f"c{n}", data=LARGE_DATA if n == 6 else "small") for n in range(1, 11)]
    )
    refusals: list[tuple[int, str]] = []
    committed = CommitSignal()
    relay = Relay(nc, ledger.store, ledger.settings, committed, lambda at, why: refusals.append((at, why)))
    running = asyncio.create_task(relay.run())
    try:
        await _until(lambda: bool(refusals), 20)
        # New records and commits, for a few of the relay's polls: it tries nothing more.
        await ledger.pipeline.process([created(f"e{n}", connection=f"c{n}") for n in range(11, 21)])
        for _ in range(8):
            committed.ring()
            await asyncio.sleep(0.25)
        assert [r["position"] for r in await ledger_stream(nc, 5, timeout=5)] == [1, 2, 3, 4, 5]
        complaints = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(complaints) == 1, [r.getMessage() for r in complaints]
        assert complaints[0].levelno == logging.ERROR
        assert "position 6" in complaints[0].getMessage()
        assert "message size exceeds maximum" in complaints[0].getMessage()
        assert [at for at, _ in refusals] == [6]
        assert "message size exceeds maximum" in refusals[0][1]
        # Stopped, not gone (inline, its end would end serve): up to the record before, checkpoint
        # written, lease let go.
        assert not running.done()
        assert await read_checkpoint(ledger.store.engine, RELAY_CHECKPOINT) == 5
        assert not relay.lease.held
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)
        await nc.close()


@pytest.mark.timeout(120)
async def test_serve_tells_of_the_refused_record_in_its_metrics(
    service_factory: type[Service], nats_url: str, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("from the relay process to the gauge, nothing depends on the database")
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        service = service_factory()  # the relay in a child process, the default
        # The operator lowers the stream's limit while the service runs (serve applies the
        # settings' limits when it starts).
        config = (await js.stream_info("LEDGER")).config
        await js.update_stream(config.evolve(max_msg_size=MAX_MSG_SIZE))
        lines = [
            orjson.dumps(body(f"e{n}", connection=f"c{n}", data=LARGE_DATA if n == 4 else "small"))
            for n in range(1, 9)
        ]
        await publish_all(nc, lines)
        assert await wait_for_head(nc, 8, timeout=30) == 8
        records, _ = await replay(nc, {})
        large = next(r["position"] for r in records if r["id"] == "e4")

        async def gauge() -> str:
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"{service.http_url}/metrics")).text
            return next((line for line in metrics.splitlines() if line.startswith(GAUGE)), "no gauge")

        deadline = time.monotonic() + 30
        while (value := await gauge()) != f"{GAUGE} {float(large)}":
            assert time.monotonic() < deadline, value
            await asyncio.sleep(0.2)
        published = await ledger_stream(nc, large - 1, timeout=5)
        assert [r["position"] for r in published] == list(range(1, large))
        assert service.process.poll() is None
        assert "the relay process exited" not in service.log.read_text()
        assert service.stop() == 0
    finally:
        await nc.close()


@pytest.mark.timeout(60)
async def test_a_refusal_that_may_pass_is_tried_again_after_growing_pauses(
    ledger: LedgerService, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if ledger.store.dialect != "sqlite":
        pytest.skip("the relay's pauses do not depend on the database")
    caplog.set_level(logging.INFO, logger="service.nats.relay")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    # A LEDGER stream that takes none of the relay's subjects: every publish meets "no responders".
    await js.add_stream(name="LEDGER", subjects=["elsewhere.>"])
    await ledger.pipeline.process([created(f"e{n}", connection=f"c{n}") for n in range(1, 6)])
    committed = CommitSignal()
    relay = Relay(nc, ledger.store, ledger.settings, committed)
    running = asyncio.create_task(relay.run())
    try:
        for _ in range(16):  # four seconds of commits, which must not cut the pauses short
            committed.ring()
            await asyncio.sleep(0.25)
        paused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("relay paused")]
        assert all("503" in p for p in paused)
        # 1 s, then 2 s, then 5 s: at most three tries in four seconds, whatever the commits (a
        # relay that retried at each commit would have tried sixteen times); fewer on a slow day.
        assert 1 <= len(paused) <= 3, paused
        seconds = [int(p.removeprefix("relay paused for ").split(" ")[0]) for p in paused]
        assert seconds == [1, 2, 5][: len(seconds)], paused
        assert not running.done()
        await js.update_stream(StreamConfig(name="LEDGER", subjects=["ledger.records.>"]))
        assert [r["position"] for r in await ledger_stream(nc, 5, timeout=15)] == [1, 2, 3, 4, 5]
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)
        await nc.close()
