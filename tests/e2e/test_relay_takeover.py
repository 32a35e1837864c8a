"""Two relays on one PostgreSQL and one nats-server, and the lease holder's database connection
terminated by the server halfway through 50,000 records: the relay that held the lease finds
out and stops publishing, the lease passes on (to the other relay, or back to the same one once
it is free), and LEDGER holds every record once, in position order, with no gap."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from sqlalchemy import text

from service.inbound import Incoming
from service.ledger.checkpoints import read_checkpoint
from service.nats.head import announce_head
from service.nats.relay import RELAY_CHECKPOINT, RELAY_LEASE
from service.nats.streams import ensure_ledger_stream
from service.pipeline.ledger_service import LedgerService
from tests.e2e.natsutil import ledger_stream
from tests.helpers import created

RECORDS = 50_000
BATCH = 2_500
KILL_AFTER = 15_000  # records in LEDGER when the lease holder's connection is terminated
# The backend holding the relay lease in this test's database: an advisory lock on a bigint key
# shows in pg_locks as its high and low halves (other databases on the server may have relays).
_HOLDER = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :high "
    "AND objid = :low AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _event(n: int) -> Incoming:
    return created(f"e{n}", session=f"s{n % 300}", connection=f"c{n}")


async def _until(what: str, check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not in {seconds} s"
        await asyncio.sleep(0.05)


async def _start_relay(env: dict[str, str], log: Path, cwd: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as stderr:
        relay = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "connledger"),
            "relay",
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert relay.stdout is not None
    assert (await asyncio.wait_for(relay.stdout.readline(), 30)).startswith(b"ready")
    return relay


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_lease_holders_connection_killed_halfway_leaves_ledger_whole_and_in_order(
    ledger: LedgerService, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    if ledger.store.dialect != "postgresql":
        pytest.skip("instances share the relay lease on PostgreSQL")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_ledger_stream(nc, ledger.settings)
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_NATS_URL": nats_url, "LEDGER_HOOKS": ""}
    logs = [tmp_path / "relay-1.log", tmp_path / "relay-2.log"]
    relays: list[asyncio.subprocess.Process] = []
    checkpoints: list[int] = []

    async def stored() -> int:
        return int((await js.stream_info("LEDGER")).state.messages)

    async def append_all() -> None:
        for first in range(0, RECORDS, BATCH):
            await ledger.pipeline.process([_event(n) for n in range(first, first + BATCH)])
            await announce_head(nc, first + BATCH)  # as serve does: the relays read at once

    async def watch_checkpoint() -> None:
        while True:
            checkpoints.append(await read_checkpoint(ledger.store.engine, RELAY_CHECKPOINT))
            await asyncio.sleep(0.05)

    async def holds(log: Path) -> bool:
        return "relay lease held" in await asyncio.to_thread(log.read_text)

    watching = asyncio.create_task(watch_checkpoint())
    try:
        relays.append(await _start_relay(env, logs[0], tmp_path))
        await _until("the first relay holds the lease", lambda: holds(logs[0]), 15)
        relays.append(await _start_relay(env, logs[1], tmp_path))
        appending = asyncio.create_task(append_all())

        async def relayed_enough() -> bool:
            return await stored() >= KILL_AFTER

        await _until(f"{KILL_AFTER} records relayed", relayed_enough, 60)
        async with ledger.store.engine.connect() as admin:
            holders = (
                (await admin.execute(_HOLDER, {"high": RELAY_LEASE >> 32, "low": RELAY_LEASE & 0xFFFFFFFF}))
                .scalars()
                .all()
            )
            assert len(holders) == 1, "one relay holds the lease"
            assert await admin.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": holders[0]})
        killed_at = await stored()
        await appending

        async def all_relayed() -> bool:
            return await stored() >= RECORDS and checkpoints[-1] == RECORDS

        await _until("every record relayed and checkpointed", all_relayed, 60)
        assert killed_at < RECORDS, "the relay had finished before the kill"

        published = [r["position"] for r in await ledger_stream(nc, RECORDS)]
        assert len(published) == RECORDS, "a record stored twice"
        assert published == list(range(1, RECORDS + 1)), "out of position order, or a gap"
        assert checkpoints == sorted(checkpoints), "the checkpoint moved backwards"
        # The relay that held the lease found out it had lost it; a relay holds it now.
        assert "relay lease lost" in logs[0].read_text()
        assert "relay lease lost" not in logs[1].read_text()
        assert await holds(logs[1]) or logs[0].read_text().count("relay lease held") == 2
        for relay in relays:
            relay.send_signal(signal.SIGTERM)
        assert [await asyncio.wait_for(relay.wait(), 30) for relay in relays] == [0, 0]
    finally:
        watching.cancel()
        for relay in relays:
            if relay.returncode is None:
                relay.kill()
                await relay.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await nc.close()
