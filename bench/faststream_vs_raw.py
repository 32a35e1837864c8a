#!/usr/bin/env python3
"""The service's raw nats-py hot paths against doing the same through FastStream, in one run,
on one nats-server (JetStream, a temporary folder, a free port):

    .venv/bin/python bench/faststream_vs_raw.py
    .venv/bin/python bench/faststream_vs_raw.py --messages 100000 --requests 5000

1. pull: --messages events (about 350 bytes) waiting in a stream, read by a durable pull
   consumer and acknowledged, until every one is. Raw: the service's PullFeed, batches of
   --batch, acknowledged with ack_all (service/nats/pull_feed.py, acks.py). FastStream: a
   pull subscriber with batch=True of --fs-batch (FastStream's own fetch), acknowledging each
   message as FastStream does after its handler. Messages/s.
2. publish: --messages records published to a stream, each with a Nats-Msg-Id, stored in
   order. Raw: the relay's AckedPublisher in chunks of 2,000 (chained: one acknowledgement a
   chunk; service/nats/chained_publisher.py). FastStream: `broker.publish(..., stream=)` one
   message after another, each awaiting its PubAck (what keeps the order without chaining).
   Messages/s.
3. count: --requests requests, one at a time, then --requests with 100 in flight, answered
   with a constant count. Raw: a nats-py subscription whose callback answers; FastStream: the
   service's own count subscriber (declare_responders: queue group, decoder, typed body,
   refusal middleware) over an answer that is a constant. p50/p99 ms and requests/s. And, as
   the service serves it: that subscriber with plain requests answered inline (InlineCount).

Each figure is the median of --repeat runs; the ratios are raw / FastStream (above 1: raw is
faster). Progress on stderr, the table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import orjson
from faststream.nats import JStream, NatsBroker, PullSub
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from service.nats.acks import ack_all
from service.nats.chained_publisher import AckedPublisher
from service.nats.embedded import find_binary
from service.nats.pull_feed import ByteBudget, PullFeed
from service.nats.responders import InlineCount, ReplayRequest, SessionQuery, declare_responders

BODY = orjson.dumps(
    {
        "id": "e" * 36,
        "type": "connectionCreated",
        "sessionId": "s" * 40,
        "timestamp": 1_700_000_000_000,
        "connection": {"connectionId": "c" * 36, "creationTime": 1_700_000_000_000, "data": "d" * 120},
    }
)
ANSWER = orjson.dumps({"sessionId": "s1", "count": 3, "position": 42})


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def nats_server(folder: Path) -> Any:
    port = free_port()
    process = subprocess.Popen(
        [str(find_binary()), "-js", "-sd", str(folder), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(url)
    try:
        yield nc
    finally:
        await nc.close()


async def fresh_stream(nc: Client, stream: str, subject: str) -> None:
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(stream)
    await js.add_stream(StreamConfig(name=stream, subjects=[subject + ".>"]))


async def fill(nc: Client, stream: str, subject: str, messages: int) -> None:
    js = nc.jetstream()
    await fresh_stream(nc, stream, subject)
    for start in range(0, messages, 5000):
        futures = [
            await js.publish_async(f"{subject}.s{n % 100}.connectionCreated", BODY)
            for n in range(start, min(messages, start + 5000))
        ]
        await asyncio.gather(*futures)


async def pull_raw(url: str, messages: int, batch: int) -> float:
    async with client(url) as nc:
        await fill(nc, "PULLRAW", "pr", messages)
        await nc.jetstream().add_consumer(
            "PULLRAW",
            ConsumerConfig(
                durable_name="raw",
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_ack_pending=max(20_000, batch * 4),
            ),
        )
        feed = PullFeed(
            nc,
            "PULLRAW",
            "raw",
            batch=batch,
            expires=0.5,
            budget=ByteBudget(feed=32 * 1024 * 1024, batch=16 * 1024 * 1024, largest=1024 * 1024),
        )
        await feed.start()
        started = time.perf_counter()
        done = 0
        while done < messages:
            taken = await feed.take(0.5)
            await ack_all(nc, taken)
            done += len(taken)
        await nc.flush()
        elapsed = time.perf_counter() - started
        await feed.close()
        return messages / elapsed


async def pull_faststream(url: str, messages: int, batch: int) -> float:
    async with client(url) as nc:
        await fill(nc, "PULLFS", "pf", messages)
    broker = NatsBroker(url, logger=None)
    seen = 0
    finished = asyncio.Event()

    @broker.subscriber(
        "pf.>",
        stream=JStream("PULLFS", declare=False),
        durable="fs",
        pull_sub=PullSub(batch_size=batch, batch=True, timeout=0.5),
    )
    async def handle(bodies: list[Any]) -> None:
        nonlocal seen
        seen += len(bodies)
        if seen >= messages:
            finished.set()

    started = time.perf_counter()
    await broker.start()
    await finished.wait()
    await broker.connection.flush()
    elapsed = time.perf_counter() - started
    await broker.stop()
    return messages / elapsed


def _records(messages: int) -> list[tuple[str, bytes, str]]:
    return [(f"rec.s{n % 100}.connectionCreated", BODY, f"id-{n}") for n in range(messages)]


async def publish_raw(url: str, messages: int) -> float:
    async with client(url) as nc:
        await fresh_stream(nc, "PUBRAW", "rec")
        publisher = AckedPublisher(nc)
        await publisher.start()
        records = _records(messages)
        started = time.perf_counter()
        for start in range(0, messages, 2000):
            await publisher.publish(records[start : start + 2000], timeout=30)
        elapsed = time.perf_counter() - started
        await publisher.close()
        await nc.jetstream().delete_stream("PUBRAW")
        return messages / elapsed


async def publish_faststream(url: str, messages: int) -> float:
    async with client(url) as nc:
        await fresh_stream(nc, "PUBFS", "rec")
    broker = NatsBroker(url, logger=None)
    await broker.start()
    records = _records(messages)
    started = time.perf_counter()
    for subject, payload, msg_id in records:
        await broker.publish(payload, subject, headers={"Nats-Msg-Id": msg_id}, stream="PUBFS", timeout=30)
    elapsed = time.perf_counter() - started
    await broker.stop()
    async with client(url) as nc:
        await nc.jetstream().delete_stream("PUBFS")
    return messages / elapsed


class Constant:
    async def count(self, session_id: str, query: SessionQuery) -> bytes:
        return ANSWER

    connections = count

    async def replay(self, request: ReplayRequest, inbox: str) -> None:
        return None

    async def refuse_replay(self, inbox: str, body: dict[str, str | None], after: int) -> None:
        return None


async def _ask(url: str, requests: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) one at a time, and requests/s with 100 in flight."""
    async with client(url) as nc:
        for _ in range(200):  # warm up
            await nc.request("ledger.sessions.s1.count", b"", timeout=5)
        delays = []
        for _ in range(requests):
            started = time.perf_counter()
            await nc.request("ledger.sessions.s1.count", b"", timeout=5)
            delays.append((time.perf_counter() - started) * 1000)
        delays.sort()
        slots = asyncio.Semaphore(100)

        async def one() -> None:
            async with slots:
                await nc.request("ledger.sessions.s1.count", b"", timeout=10)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        rate = requests / (time.perf_counter() - started)
        return delays[len(delays) // 2], delays[int(len(delays) * 0.99)], rate


async def count_raw(url: str, requests: int) -> tuple[float, float, float]:
    async with client(url) as server:

        async def answer(message: Msg) -> None:
            await message.respond(ANSWER)

        await server.subscribe("ledger.sessions.*.count", queue="connection-ledger", cb=answer)
        await server.flush()
        return await _ask(url, requests)


class ConstantCounts:
    def count_now(self, session_id: str) -> dict[str, Any]:
        return {"sessionId": session_id, "count": 3, "position": 42}


async def count_faststream(url: str, requests: int, inline: bool = False) -> tuple[float, float, float]:
    """The service's count subscriber; with `inline`, as the service serves it: plain requests
    answered in the subscription's callback (InlineCount)."""
    broker = NatsBroker(url, logger=None)
    count = declare_responders(broker, Constant())
    if inline:
        await broker.connect()
        await InlineCount(count, ConstantCounts()).install(broker.connection)  # type: ignore[arg-type]
    await broker.start()
    await broker.connection.flush()
    try:
        return await _ask(url, requests)
    finally:
        await broker.stop()


async def median(runs: int, measure: Callable[[], Awaitable[Any]]) -> Any:
    results = [await measure() for _ in range(runs)]
    if isinstance(results[0], tuple):
        return tuple(statistics.median(r[i] for r in results) for i in range(len(results[0])))
    return statistics.median(results)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fs-vs-raw-") as folder, nats_server(Path(folder)) as url:
        n, r = args.messages, args.repeat
        say(f"pull: {n:,} messages, raw ...")
        raw_pull = await median(r, lambda: pull_raw(url, n, args.batch))
        say("pull: FastStream ...")
        fs_pull = await median(r, lambda: pull_faststream(url, n, args.fs_batch))
        say(f"publish: {n:,} records, raw ...")
        raw_pub = await median(r, lambda: publish_raw(url, n))
        say("publish: FastStream ...")
        fs_pub = await median(r, lambda: publish_faststream(url, n))
        say(f"count: {args.requests:,} requests, raw ...")
        raw_count = await median(r, lambda: count_raw(url, args.requests))
        say("count: FastStream ...")
        fs_count = await median(r, lambda: count_faststream(url, args.requests))
        say("count: FastStream subscriber with the inline path ...")
        inline_count = await median(r, lambda: count_faststream(url, args.requests, inline=True))
    print(f"\n$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{os.cpu_count()} cores; medians of {r} run(s)")
    print(f"{'path':<34}{'raw nats-py':>16}{'FastStream':>16}{'raw / FastStream':>20}")
    rows = [
        (f"pull + ack, msg/s (batch {args.batch}/{args.fs_batch})", raw_pull, fs_pull, True),
        ("ordered JetStream publish, msg/s", raw_pub, fs_pub, True),
        ("count, one at a time, p50 ms", raw_count[0], fs_count[0], False),
        ("count, one at a time, p99 ms", raw_count[1], fs_count[1], False),
        ("count, 100 in flight, req/s", raw_count[2], fs_count[2], True),
    ]
    for name, raw, fast, higher_is_better in rows:
        ratio = raw / fast if higher_is_better else fast / raw
        print(f"{name:<34}{raw:>16,.2f}{fast:>16,.2f}{ratio:>19.2f}x")
    print("(ratio above 1: raw nats-py is faster; for latencies, FastStream's / raw's)")
    print(
        "count as served (FastStream subscriber, plain requests inline): one at a time p50 "
        f"{inline_count[0]:.2f} / p99 {inline_count[1]:.2f} ms; 100 in flight {inline_count[2]:,.0f} req/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--batch", type=int, default=10_000, help="the raw feed's batch (LEDGER_BATCH_SIZE)")
    parser.add_argument("--fs-batch", type=int, default=500, help="FastStream's pull batch_size")
    parser.add_argument("--repeat", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
