"""The service on a three-node JetStream cluster: two instances on one PostgreSQL, streams at
three replicas, 50,000 events published at a steady rate while the node that leads CONNECTIONS
is killed (SIGKILL) and started again, and then the instance holding the relay lease is killed.
After it all: each published event is in the ledger once, the counts are the reference fold's,
LEDGER holds every record once in position order, and nothing valid was rejected."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import nats.js.errors
import orjson
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from service.events import Event, decode
from tests.e2e.conftest import Service
from tests.e2e.nats_cluster import NatsCluster, running_nats_cluster
from tests.e2e.natsutil import (
    ask,
    check_counts_follow_the_ledger,
    final_live_sets,
    ledger_stream,
    replay,
    wait_for_head,
)
from tests.helpers import CREATED, DESTROYED, body

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EVENTS = 50_000
RATE = 1_500.0  # events a second
SESSIONS = 200
IN_FLIGHT = 200  # publishes awaiting their PubAck at once


def _events() -> list[dict[str, Any]]:
    """Joins and leaves over SESSIONS sessions: every other connection leaves again."""
    out: list[dict[str, Any]] = []
    n = 0
    while len(out) < EVENTS:
        session = f"s{n % SESSIONS}"
        out.append(body(f"c-{n}", CREATED, session, f"k{n}", timestamp=1_732_700_000_000 + n))
        if n % 2 == 0 and len(out) < EVENTS:
            out.append(body(f"d-{n}", DESTROYED, session, f"k{n}", timestamp=1_732_700_000_001 + n))
        n += 1
    return out


class Publisher:
    """Publishes each event once with JetStream, paced, each with its Nats-Msg-Id; a publish
    that fails (no stream leader for a while, a node gone) is tried again with the same id,
    as a producer should, until it is acknowledged."""

    def __init__(self, nc: Client) -> None:
        self.js = nc.jetstream()
        self.acknowledged = 0
        self.retries = 0
        self.window = asyncio.Semaphore(IN_FLIGHT)

    async def _one(self, event: dict[str, Any]) -> None:
        subject = f"connections.{event['sessionId']}.{event['type']}"
        data = orjson.dumps(event)
        try:
            while True:
                try:
                    await self.js.publish(subject, data, timeout=2, headers={"Nats-Msg-Id": event["id"]})
                    break
                except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                    self.retries += 1
                    await asyncio.sleep(0.1)
        finally:
            self.window.release()
        self.acknowledged += 1

    async def run(self, events: list[dict[str, Any]], progress: list[int]) -> None:
        start = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        for index, event in enumerate(events):
            delay = start + index / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.window.acquire()
            task = asyncio.create_task(self._one(event))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            progress[0] = index + 1
        while tasks:
            await asyncio.gather(*tasks)


async def _not_ready_reasons(client: httpx.AsyncClient) -> dict[str, str]:
    """What /readyz says while it is not ready, within ten seconds of a node's death."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = await client.get("/readyz")
        if answer.status_code == 503:
            reasons: dict[str, str] = answer.json()["reasons"]
            return reasons
        await asyncio.sleep(0.05)
    raise AssertionError("/readyz said ready all through the election")


async def _when_published(progress: list[int], share: float) -> None:
    while progress[0] < EVENTS * share:
        await asyncio.sleep(0.05)


def _metric(service: Service, name: str) -> float:
    with urllib.request.urlopen(f"{service.http_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no {name} in /metrics")


async def _relay_holder(services: list[Service]) -> Service:
    """The instance whose relay holds the lease, by its ledger_relay_lease_held gauge."""
    deadline = time.monotonic() + 10
    while True:
        holders = [s for s in services if _metric(s, "ledger_relay_lease_held") == 1]
        if len(holders) == 1:
            return holders[0]
        assert time.monotonic() < deadline, f"{len(holders)} instances say they hold the relay lease"
        await asyncio.sleep(0.1)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        raw = answer.read()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


async def test_node_and_instance_deaths_lose_nothing_and_duplicate_nothing(
    fresh_postgres: str, tmp_path: Path
) -> None:
    (tmp_path / "nats").mkdir()
    with running_nats_cluster(tmp_path / "nats") as cluster:
        await cluster.wait_until_ready()
        env = {
            "LEDGER_DATABASE_URL": fresh_postgres,
            "LEDGER_NATS_URL": cluster.url,
            "LEDGER_STREAM_REPLICAS": "3",
            "LEDGER_HOOKS": "",
            # What the killed instance held unacknowledged is delivered again after this.
            "LEDGER_INGEST_ACK_WAIT": "10",
        }
        services = [Service(env, tmp_path), Service(env, tmp_path)]
        try:
            await _scenario(cluster, services)
        finally:
            for service in services:
                if service.process.poll() is None:
                    service.stop()


async def _scenario(cluster: NatsCluster, services: list[Service]) -> None:
    nc = await cluster.connect()
    events = _events()
    publisher = Publisher(nc)
    progress = [0]
    publishing = asyncio.create_task(publisher.run(list(events), progress))

    await _when_published(progress, 0.2)
    leader = await cluster.stream_leader(nc, "CONNECTIONS")
    cluster.node(leader).kill()
    # Meanwhile, an HTTP write waits for the election rather than fail, and readiness says why
    # it is not ready.
    during = body("http-during-election", CREATED, "s-http", "k-http")
    events.append(during)
    async with httpx.AsyncClient(base_url=services[0].http_url, timeout=30) as client:
        written = asyncio.create_task(client.post("/v1/events", json=during))
        reasons = await _not_ready_reasons(client)
        assert (await written).status_code == 202
    assert "streams" in reasons or "nats" in reasons, reasons
    await _when_published(progress, 0.4)
    cluster.node(leader).start()
    await _when_published(progress, 0.6)
    holder = await _relay_holder(services)
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait(10)
    holder.close()
    survivor = next(s for s in services if s is not holder)

    await asyncio.wait_for(publishing, 120)
    assert publisher.acknowledged == EVENTS
    total = len(events)  # and the one written over HTTP

    head = await wait_for_head(nc, total, timeout=120)
    assert head == total, f"the ledger holds {head} events of {total}"
    records, _ = await replay(nc, {"after": 0})
    assert [r["position"] for r in records] == list(range(1, total + 1))
    assert sorted(r["id"] for r in records) == sorted(e["id"] for e in events)
    check_counts_follow_the_ledger(records)

    decoded = [decode(orjson.dumps(e)) for e in events]
    expected = final_live_sets([e for e in decoded if isinstance(e, Event)])
    for session, live in expected.items():
        answer = await ask(nc, f"ledger.sessions.{session}.count")
        assert answer["count"] == len(live), session

    published = await ledger_stream(nc, total, timeout=120)
    assert [r["position"] for r in published] == list(range(1, total + 1))

    assert _get(f"{survivor.http_url}/v1/rejected") == []
    await nc.close()
