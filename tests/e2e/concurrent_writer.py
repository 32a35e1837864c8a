"""One writer process of tests/e2e/test_concurrent_writers_postgres.py (not a test itself).

    python -m tests.e2e.concurrent_writer DATABASE_URL WRITER EVENTS SHARED SEED

Opens the ledger on DATABASE_URL (already migrated), prints "ready", waits for a line on stdin
(so that every writer starts appending at the same moment), then appends its EVENTS events
(ids `w<WRITER>-<i>`) and the SHARED events every writer sends (ids `shared-<k>`, the same
content in every writer, so all but one copy of each are duplicates) through the pipeline, in
batches of 50-200, and prints its tally as one JSON line.

Sessions and connection ids are shared by all writers, so their creates and destroys race.
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

import orjson

from service.app.bootstrap import open_ledger
from service.inbound import Incoming
from service.settings import load_settings

SESSIONS = 6
CONNECTIONS = 40
REASONS = ("clientDisconnected", "forceDisconnected", "networkDisconnected")


def event(rng: random.Random, event_id: str, timestamp: int) -> bytes:
    created = rng.random() < 0.6
    body: dict[str, Any] = {
        "id": event_id,
        "type": "connectionCreated" if created else "connectionDestroyed",
        "sessionId": f"S{rng.randrange(SESSIONS)}",
        "timestamp": timestamp,
        "connection": {
            "connectionId": f"c{rng.randrange(CONNECTIONS)}",
            "creationTime": 1_732_699_990_000 + rng.randrange(1000),
            "data": rng.choice([None, "name=Ana", "name=Bo"]),
        },
    }
    if not created:
        body["reason"] = rng.choice(REASONS)
    return orjson.dumps(body)


def stream(writer: int, events: int, shared: int, seed: int) -> list[bytes]:
    common = random.Random(seed)
    shared_bodies = [event(common, f"shared-{k}", 1_732_700_000_000 + k) for k in range(shared)]
    own = random.Random(seed * 1_000 + writer + 1)
    bodies = [event(own, f"w{writer}-{i}", 1_732_700_000_000 + i) for i in range(events)]
    for shared_body in shared_bodies:
        bodies.insert(own.randrange(len(bodies) + 1), shared_body)
    return bodies


async def run(url: str, writer: int, events: int, shared: int, seed: int) -> dict[str, int]:
    bodies = stream(writer, events, shared, seed)
    batch_sizes = random.Random(seed * 7_919 + writer)
    settings = load_settings(database_url=url, hooks="")
    tally = {"appended": 0, "duplicates": 0, "rejected": 0, "ignored": 0, "batches": 0}
    async with open_ledger(settings, run_migrations=False) as ledger:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start = 0
        while start < len(bodies):
            size = batch_sizes.randint(50, 200)
            batch = [Incoming(raw, 1_732_700_000_000, "test") for raw in bodies[start : start + size]]
            result = await ledger.pipeline.process(batch)
            for key, value in result.tally().summary().items():
                tally[key] += value
            tally["batches"] += 1
            start += size
    return tally


def main() -> None:
    url, writer, events, shared, seed = sys.argv[1:6]
    tally = asyncio.run(run(url, int(writer), int(events), int(shared), int(seed)))
    print(orjson.dumps(tally).decode(), flush=True)


if __name__ == "__main__":
    main()
