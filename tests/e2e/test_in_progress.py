"""A batch that takes longer than the consumer's ack_wait (slow hooks, a commit waiting for the
writer lock behind a rebuild) is told "in progress" meanwhile: nothing of it is delivered again,
to this instance or another, and no hook runs twice. With a 2 s ack_wait (the setting) instead
of the default 60 s, so that the test takes seconds."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from tests.e2e.conftest import Service
from tests.e2e.natsutil import wait_for_head
from tests.helpers import body, writer_lock_held

ROOT = Path(__file__).resolve().parents[2]
# Kept in progress every third of it: a loaded machine's pauses of a second or so stay inside.
ACK_WAIT = "4"


async def _publish(nc: Client, ids: list[str]) -> None:
    js = nc.jetstream()
    for n, event_id in enumerate(ids):
        await js.publish("connections.s1.connectionCreated", orjson.dumps(body(event_id, connection=f"c{n}")))


async def _consumer(nc: Client) -> Any:
    """The consumer once the server has taken every ack in (or after 5 s)."""
    js = nc.jetstream()
    for _ in range(50):
        info = await js.consumer_info("CONNECTIONS", "connection-ledger")
        if not info.num_ack_pending and not info.num_pending:
            break
        await asyncio.sleep(0.1)
    return info


def _delivered_once(info: Any, messages: int) -> None:
    # The consumer sequence counts deliveries, redeliveries included; num_redelivered counts
    # only messages redelivered and not yet acked, so it alone would miss a redelivery by now.
    assert info.config.ack_wait == float(ACK_WAIT)
    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)
    assert info.delivered.stream_seq == messages
    assert info.delivered.consumer_seq == messages, "a message was delivered again"


@pytest.mark.timeout(180)
async def test_slow_hooks_run_once_and_nothing_is_delivered_again(
    service_factory: type[Service], nats_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "hooked.txt"
    hooked = {
        "LEDGER_HOOKS": "tests.e2e.cli_hooks:slow_record",
        "LEDGER_HOOK_TIMEOUT": "30",
        "LEDGER_INGEST_ACK_WAIT": ACK_WAIT,
        "LEDGER_RELAY_MODE": "off",
        "CONNLEDGER_TEST_HOOK_LOG": str(log),
        "CONNLEDGER_TEST_HOOK_SECONDS": "2.8",  # a batch of three: 8.4 s, twice the ack_wait
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # Two instances share the consumer: a message delivered again could go to either.
    services = [service_factory(**hooked), service_factory(**hooked)]
    ids = [f"slow{n}" for n in range(6)]
    nc = await nats.connect(nats_url)
    try:
        await _publish(nc, ids)
        assert await wait_for_head(nc, len(ids), timeout=90) == len(ids)
        _delivered_once(await _consumer(nc), len(ids))
    finally:
        await nc.close()
    assert [s.stop() for s in services] == [0, 0]
    assert sorted(log.read_text().split()) == ids, "each event's hooks ran once"


@pytest.mark.timeout(180)
async def test_a_commit_waiting_for_the_writer_lock_keeps_its_batch(
    service_factory: type[Service], nats_url: str, database_url: str
) -> None:
    nc = await nats.connect(nats_url)
    # A consumer made by an earlier release, with the ack_wait it had: the service sets its own.
    js = nc.jetstream()
    await js.add_stream(name="CONNECTIONS", subjects=["connections.>"])
    await js.add_consumer(
        "CONNECTIONS",
        ConsumerConfig(
            durable_name="connection-ledger",
            filter_subject="connections.>",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60,
            max_deliver=-1,
        ),
    )
    service = service_factory(LEDGER_INGEST_ACK_WAIT=ACK_WAIT, LEDGER_RELAY_MODE="off")
    try:
        await _publish(nc, ["before"])
        assert await wait_for_head(nc, 1, timeout=30) == 1
        async with writer_lock_held(database_url):
            await _publish(nc, ["w1", "w2", "w3"])
            await asyncio.sleep(3 * float(ACK_WAIT))  # the batch waits for the lock meanwhile
        assert await wait_for_head(nc, 4, timeout=30) == 4
        _delivered_once(await _consumer(nc), 4)
    finally:
        await nc.close()
    assert service.stop() == 0
