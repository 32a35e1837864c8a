"""`connledger simulate`: realistic traffic against a running service, at a chosen rate, so
that a newcomer can watch the dashboard move. Sessions fill and empty, connections drop off the
network or are forced out, recorders join, producers retry (duplicates) and leaves overtake
joins (out of order): see traffic.py beside it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson

from service.nats.connect import connect
from service.settings import Settings
from service.simulation.traffic import generate

__all__ = ["nats_url_for_simulation", "simulate"]


def nats_url_for_simulation(settings: Settings) -> str:
    """LEDGER_NATS_URL, else the bundled server a local `connledger serve` wrote down."""
    if settings.nats_url:
        return settings.nats_url
    written = settings.var_dir / "nats.url"
    if written.exists():
        return written.read_text().strip()
    return "nats://127.0.0.1:4222"


async def simulate(
    settings: Settings,
    url: str,
    rate: float,
    sessions: int,
    duration: float | None,
    seed: int,
    report: Callable[[int, float], None],
) -> int:
    nc = await connect(settings, url, name="connection-ledger-simulate")
    js = nc.jetstream()
    sent = 0
    started = time.monotonic()
    try:
        for line in generate(10**12, seed=seed, sessions=sessions, epoch_ms=time.time_ns() // 1_000_000):
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            # Pace: never run ahead of `rate`, whatever the batches cost.
            ahead = sent / rate - elapsed
            if ahead > 0:
                await asyncio.sleep(ahead)
            body = orjson.loads(line)
            kind = body.get("type") or body.get("event")
            await js.publish_async(f"{settings.subject_prefix}.{body['sessionId']}.{kind}", line)
            sent += 1
            if sent % max(1, int(rate)) == 0:
                report(sent, time.monotonic() - started)
        await js.publish_async_completed()
    finally:
        await nc.close()
    return sent
