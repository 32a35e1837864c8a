"""A three-node NATS cluster with JetStream on loopback, from the bundled nats-server: each node
with its own name, store and ports, routes to every node, `sync_interval: always`. Nodes can be
killed (SIGKILL) and started again on the same store. And a publisher that rides out the
elections as a producer on a cluster should."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
from nats.aio.client import Client

from bench.harness.nats_server import free_port, wait_for_port
from service.nats.embedded import find_binary
from service.nats.intake_publisher import content_id

CLUSTER_NAME = "ledger-test"


@dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(find_binary()), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, nothing flushed beyond what was synced."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class NatsCluster:
    nodes: list[Node]

    @property
    def url(self) -> str:
        """Every node, as LEDGER_NATS_URL lists them."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    async def connect(self) -> Client:
        return await nats.connect(
            servers=[n.url for n in self.nodes], max_reconnect_attempts=-1, reconnect_time_wait=0.2
        )

    async def wait_until_ready(self, within: float = 30) -> None:
        """Every node up and JetStream's meta group with a leader."""
        deadline = time.monotonic() + within
        while True:
            nc = await self.connect()
            try:
                await nc.jetstream().account_info()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
            finally:
                await nc.close()

    async def stream_leader(self, nc: Client, stream: str, within: float = 30) -> str:
        deadline = time.monotonic() + within
        while True:
            try:
                info = await nc.jetstream().stream_info(stream)
                if info.cluster is not None and info.cluster.leader:
                    return info.cluster.leader
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream} has no leader")
            await asyncio.sleep(0.1)


def _config(name: str, port: int, cluster_port: int, store: Path, routes: list[int]) -> str:
    route_list = "\n    ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
    return f"""server_name: {name}
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: 127.0.0.1:{cluster_port}
  routes: [
    {route_list}
  ]
}}
"""


@contextmanager
def running_nats_cluster(folder: Path, size: int = 3) -> Iterator[NatsCluster]:
    ports = [(free_port(), free_port()) for _ in range(size)]
    nodes: list[Node] = []
    for index, (port, cluster_port) in enumerate(ports, start=1):
        name = f"n{index}"
        config = folder / f"{name}.conf"
        config.write_text(_config(name, port, cluster_port, folder / name, [c for _, c in ports]))
        nodes.append(Node(name, port, cluster_port, config, folder / f"{name}.log"))
    try:
        for node in nodes:
            node.start()
        yield NatsCluster(nodes)
    finally:
        for node in nodes:
            node.stop()


class RetryingPublisher:
    """Publishes events with JetStream at a steady rate, each with a Nats-Msg-Id made from its
    bytes (as the HTTP edge does); a publish that fails (no stream leader for a while, a node
    gone) is tried again with the same id until it is acknowledged, as a producer on a cluster
    should."""

    def __init__(self, nc: Client, rate: float, in_flight: int = 200) -> None:
        self.js = nc.jetstream()
        self.rate = rate
        self.window = asyncio.Semaphore(in_flight)
        self.acknowledged = 0
        self.retries = 0
        self.published = 0  # started so far

    async def _one(self, event: dict[str, Any]) -> None:
        subject = f"connections.{event['sessionId']}.{event['type']}"
        data = orjson.dumps(event)
        try:
            while True:
                try:
                    # The id of the bytes, not of the event: see docs/nats.md.
                    await self.js.publish(subject, data, timeout=2, headers={"Nats-Msg-Id": content_id(data)})
                    break
                except (nats.errors.Error, TimeoutError):
                    self.retries += 1
                    await asyncio.sleep(0.1)
        finally:
            self.window.release()
        self.acknowledged += 1

    async def run(self, events: list[dict[str, Any]]) -> None:
        start = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        for index, event in enumerate(events):
            delay = start + index / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.window.acquire()
            task = asyncio.create_task(self._one(event))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.published = index + 1
        while tasks:
            await asyncio.gather(*tasks)

    async def until_published(self, count: float) -> None:
        while self.published < count:  # noqa: ASYNC110 - the count moves with every publish
            await asyncio.sleep(0.02)
