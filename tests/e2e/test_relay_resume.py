"""A relay that starts again after JetStream's duplicate window has passed: the records between
its checkpoint and the end of the stream are not stored a second time, behind later ones. In one
process, against a real nats-server, on both databases."""

from __future__ import annotations

import asyncio
import contextlib

import nats
import pytest
from nats.js.api import StorageType, StreamConfig
from sqlalchemy import text

from service.commit_signal import CommitSignal
from service.nats.relay import RELAY_CHECKPOINT, Relay
from service.pipeline.ledger_service import LedgerService
from tests.e2e.natsutil import ledger_stream
from tests.helpers import created

DUPLICATE_WINDOW = 0.5


async def _relay_until(ledger: LedgerService, nc: nats.NATS, stored: int) -> None:
    committed = CommitSignal()
    relay = Relay(nc, ledger.store, ledger.settings, committed)
    running = asyncio.create_task(relay.run())
    js = nc.jetstream()
    try:
        async with asyncio.timeout(20):
            while (await js.stream_info("LEDGER")).state.messages < stored:
                committed.ring()
                await asyncio.sleep(0.05)
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)


async def _set_checkpoint(ledger: LedgerService, position: int) -> None:
    async with ledger.store.engine.begin() as connection:
        await connection.execute(
            text("UPDATE projection_checkpoints SET position = :position WHERE name = :name"),
            {"position": position, "name": RELAY_CHECKPOINT},
        )


@pytest.mark.timeout(90)
async def test_a_relay_back_after_the_duplicate_window_stores_nothing_twice(
    ledger: LedgerService, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    try:
        # The stream as an operator may have it: a short duplicate window.
        await nc.jetstream().add_stream(
            StreamConfig(
                name="LEDGER",
                subjects=["ledger.records.>"],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW,
            )
        )
        await ledger.pipeline.process([created(f"e{n}", connection=f"c{n}") for n in range(100)])
        await _relay_until(ledger, nc, 100)
        # A crash before the checkpoint caught up: it says 40 while the stream holds 100.
        await _set_checkpoint(ledger, 40)
        await asyncio.sleep(DUPLICATE_WINDOW * 3)
        await ledger.pipeline.process([created(f"f{n}", connection=f"d{n}") for n in range(20)])
        await _relay_until(ledger, nc, 120)
        await asyncio.sleep(0.5)  # anything stored twice would be in by now
        records = await ledger_stream(nc, 120)
        assert [r["position"] for r in records] == list(range(1, 121))
    finally:
        await nc.close()


@pytest.mark.timeout(60)
async def test_a_stream_kept_from_another_ledger_is_not_trusted(ledger: LedgerService, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="LEDGER", subjects=["ledger.records.>"], storage=StorageType.FILE)
        )
        # A record of an older ledger, at a position this one has with another event.
        await js.publish(
            "ledger.records.s1.connectionCreated", b'{"position": 5}', headers={"Nats-Msg-Id": "other"}
        )
        await ledger.pipeline.process([created(f"e{n}", connection=f"c{n}") for n in range(10)])
        await _relay_until(ledger, nc, 11)
        records = await ledger_stream(nc, 11)
        assert [r["position"] for r in records] == [5, *range(1, 11)]
    finally:
        await nc.close()
