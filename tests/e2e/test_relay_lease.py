"""The relay lease lost under a live relay (PostgreSQL): its connection terminated by the server,
another instance takes the lock, and the relay that had it stops publishing until it has the
lease again. In one process, against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import nats
import pytest
from nats.js import JetStreamContext
from sqlalchemy import text

from service.commit_signal import CommitSignal
from service.ledger.lease import Lease
from service.nats.relay import RELAY_LEASE, Relay
from service.pipeline.ledger_service import LedgerService
from tests.e2e.natsutil import ledger_stream
from tests.helpers import created

# The backends holding the relay lease in this test's database (other databases on the same
# server may have relays of their own). A lock on a bigint key shows as its high and low halves.
_HOLDERS = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :high "
    "AND objid = :low AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def _until(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached in {seconds} s")


async def _stored(js: JetStreamContext) -> int:
    return int((await js.stream_info("LEDGER")).state.messages)


async def _by(js: JetStreamContext, count: int) -> bool:
    return await _stored(js) >= count


async def _append(ledger: LedgerService, first: int, count: int) -> None:
    await ledger.pipeline.process(
        [created(f"e{n}", session=f"s{n % 7}", connection=f"c{n}") for n in range(first, first + count)]
    )


@pytest.mark.timeout(60)
async def test_a_relay_whose_lease_connection_dies_stops_publishing(
    ledger: LedgerService, nats_url: str
) -> None:
    if ledger.store.dialect != "postgresql":
        pytest.skip("on SQLite the lease is a file lock, which the OS holds as long as the process")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    committed = CommitSignal()
    relay = Relay(nc, ledger.store, ledger.settings, committed)
    running = asyncio.create_task(relay.run())
    rival = Lease(ledger.store.engine, RELAY_LEASE)
    high, low = RELAY_LEASE >> 32, RELAY_LEASE & 0xFFFFFFFF
    try:
        await _append(ledger, 0, 100)
        committed.ring()
        await _until(lambda: _by(js, 100), 15)

        async with ledger.store.engine.connect() as admin:
            holders = (await admin.execute(_HOLDERS, {"high": high, "low": low})).scalars().all()
            assert len(holders) == 1, "the relay holds the lease"
            assert await admin.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": holders[0]})
        # Another instance takes the lock as soon as the server has let it go.
        await _until(rival.try_acquire, 10)

        await _append(ledger, 100, 100)
        committed.ring()

        async def let_go() -> bool:
            return not relay.lease.held

        # It finds out before its next chunk, and lets go; until then it has published nothing.
        await _until(let_go, 15)
        await asyncio.sleep(1.0)  # two of the relay's polls, for anything it might still send
        assert await _stored(js) == 100, "the relay published without the lease"

        # Once the lease is free again the relay takes it back and goes on from its checkpoint.
        await rival.release()
        await _until(lambda: _by(js, 200), 15)
        records = await ledger_stream(nc, 200)
        assert [r["position"] for r in records] == list(range(1, 201))
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)
        await rival.release()
        await nc.close()
