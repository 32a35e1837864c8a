"""The service on a three-node JetStream cluster: two instances on one PostgreSQL, streams at
three replicas, 30,000 events published at a steady rate while the node that leads CONNECTIONS
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
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.nats_cluster import NatsCluster, RetryingPublisher, running_nats_cluster
from service.events import Event, decode
from tests.e2e.conftest import Service
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

EVENTS = 30_000
RATE = 1_500.0  # events a second
SESSIONS = 200


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
    publisher = RetryingPublisher(nc, RATE)
    publishing = asyncio.create_task(publisher.run(list(events)))

    await publisher.until_published(EVENTS * 0.2)
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
    await publisher.until_published(EVENTS * 0.4)
    cluster.node(leader).start()
    await publisher.until_published(EVENTS * 0.6)
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
