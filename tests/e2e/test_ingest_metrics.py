"""Ingest counts what it acknowledges in /metrics (the benchmarks read their batch sizes there),
parsed as the benchmarks parse it."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from bench.harness.metrics import scrape, value
from service.events import Event, decode
from service.simulation.traffic import generate
from tests.e2e.conftest import Service
from tests.e2e.natsutil import publish_all, wait_for_head


@pytest.mark.timeout(120)
async def test_ingest_counts_its_acknowledged_batches_and_messages(
    service_factory: type[Service], nats_url: str
) -> None:
    service = service_factory()
    lines = list(generate(600, seed=3, sessions=10))
    unique = len({e.id for e in (decode(line) for line in lines) if isinstance(e, Event)})
    assert unique < len(lines)  # repeats are acknowledged and counted too

    nc = await nats.connect(nats_url)
    try:
        await publish_all(nc, lines)
        assert await wait_for_head(nc, unique, 60) == unique
    finally:
        await nc.close()
    # A batch is counted once acknowledged, just after the commit that moved the head.
    deadline = time.monotonic() + 10
    while True:
        samples = await scrape(service.http_url)
        messages = value(samples, "ledger_ingest_messages_total")
        if messages >= len(lines) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert messages == len(lines)
    assert 1 <= value(samples, "ledger_ingest_batches_total") <= len(lines)
    assert service.stop() == 0
