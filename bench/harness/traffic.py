"""Generated traffic (service.simulation.traffic, decoded by the service's own decoder): as
NDJSON files cached under bench/.data/, or published into JetStream, all at once or paced from
a child process."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import uvloop
from nats.aio.client import Client

from bench.harness.databases import postgres_if_needed
from bench.harness.figures import say
from service.events import Event, decode
from service.settings import Settings
from service.simulation.traffic import generate

__all__ = [
    "DATA",
    "DEFAULTS",
    "Traffic",
    "make_traffic",
    "paced_publish",
    "publish_all",
    "publish_paced",
    "publish_rate",
    "run_in_folder",
    "run_loop",
    "traffic_file",
    "warm_up",
]

# The service's defaults, whatever LEDGER_* variables this process has (the service child gets
# none of them either): stream name, subject prefix.
DEFAULTS = Settings.model_construct()
T = TypeVar("T")
# Generated inputs and the benchmarks' SQLite files (git-ignored).
DATA = Path(__file__).resolve().parents[1] / ".data"


def traffic_file(events: int, seed: int, sessions: int | None = None) -> Path:
    """`events` generated NDJSON lines (over `sessions` sessions; by default the generator's
    own, one for every 200 events), written once and cached under DATA: to a temporary name
    first, so that an interrupted run leaves no truncated file behind."""
    DATA.mkdir(parents=True, exist_ok=True)
    spread = "" if sessions is None else f"-sessions{sessions}"
    path = DATA / f"traffic-{events}-seed{seed}{spread}.ndjson"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        with partial.open("wb") as out:
            chunk: list[bytes] = []
            for line in generate(events, seed=seed, sessions=sessions):
                chunk.append(line)
                if len(chunk) == 10_000:
                    out.write(b"\n".join(chunk) + b"\n")
                    chunk.clear()
            if chunk:
                out.write(b"\n".join(chunk) + b"\n")
        partial.rename(path)
        say(f"generated {path.name} in {time.perf_counter() - started:.1f} s")
    return path


@dataclass
class Traffic:
    """Generated events with what the ledger will make of them."""

    subjects: list[str]
    bodies: list[bytes]
    ids: list[str]
    sessions: list[str]  # per event
    positions: list[int]  # the ledger position of an event's first copy; 0 for a repeat
    unique: int

    def __len__(self) -> int:
        return len(self.bodies)


def make_traffic(count: int, seed: int) -> Traffic:
    traffic = Traffic([], [], [], [], [], 0)
    seen: set[str] = set()
    for line in generate(count, seed=seed):
        event = decode(line)  # the service's own decoder: the same (derived) ids
        assert isinstance(event, Event)
        traffic.subjects.append(f"{DEFAULTS.subject_prefix}.{event.session_id}.{event.type.value}")
        traffic.bodies.append(line)
        traffic.ids.append(event.id)
        traffic.sessions.append(event.session_id)
        if event.id in seen:
            traffic.positions.append(0)
        else:
            seen.add(event.id)
            traffic.unique += 1
            # One instance, nothing redelivered, no rejection: positions follow publish order.
            traffic.positions.append(traffic.unique)
    return traffic


async def publish_all(nc: Client, traffic: Traffic, count: int | None = None) -> None:
    """Publish the first `count` events as fast as JetStream takes them."""
    js = nc.jetstream()
    count = len(traffic) if count is None else count
    for subject, body in zip(traffic.subjects[:count], traffic.bodies[:count], strict=True):
        await js.publish_async(subject, body)
    await asyncio.wait_for(js.publish_async_completed(), 120)
    stored = (await js.stream_info(DEFAULTS.connections_stream)).state.messages
    if stored != count:
        raise RuntimeError(f"published {count} events but the stream holds {stored}")


def paced_publish(
    url: str, subjects: list[str], bodies: list[bytes], rate: float, start_at: float, go: str | None = None
) -> list[float]:
    """Run in a child process: publish at `rate` events/s from perf_counter() == start_at on;
    returns each event's publish time (on CLOCK_MONOTONIC, comparable across processes). With
    `go`, connect first, then wait for that file to appear and take start_at from it (for an
    instant only the parent learns later)."""

    async def run() -> list[float]:
        nc = await nats.connect(url, connect_timeout=5)
        try:
            js = nc.jetstream()
            stamps = [0.0] * len(bodies)
            nonlocal start_at
            if go is not None:
                told = Path(go)
                while not told.exists():  # noqa: ASYNC110, ASYNC240 - polled every millisecond
                    await asyncio.sleep(0.001)
                start_at = float(told.read_text())  # noqa: ASYNC240
            await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
            sent = 0
            while sent < len(bodies):
                due = min(len(bodies), int((time.perf_counter() - start_at) * rate) + 1)
                while sent < due:
                    stamps[sent] = time.perf_counter()
                    await js.publish_async(subjects[sent], bodies[sent])
                    sent += 1
                await asyncio.sleep(0.002)
            await asyncio.wait_for(js.publish_async_completed(), 60)
            return stamps
        finally:
            await nc.close()

    return run_loop(run())


def publish_paced(
    pool: concurrent.futures.Executor,
    url: str,
    traffic: Traffic,
    rate: float,
    start_at: float,
    go: str | None = None,
) -> asyncio.Future[list[float]]:
    """`paced_publish` of `traffic` in the pool's child process (the benchmark's own event loop
    stays free to stamp what comes back); the future's result is each event's publish time."""
    return asyncio.get_running_loop().run_in_executor(
        pool, paced_publish, url, traffic.subjects, traffic.bodies, rate, start_at, go
    )


def publish_rate(stamps: list[float]) -> float:
    """Events a second the paced publisher achieved, from its stamps."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """The benchmark's own clients run on uvloop, as the service does: on the default loop
    their own scheduling delays (several ms at p99 on this busy 2-core machine) would be
    measured as the service's latency."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def run_in_folder(
    prefix: str,
    args: argparse.Namespace,
    main: Callable[[argparse.Namespace, Path, str], Coroutine[Any, Any, T]],
) -> T:
    """`main(args, folder, admin URL)` on uvloop, in a temporary folder removed afterwards, with
    the PostgreSQL server `args.backend` needs (its admin URL from `args.pg_url` or found; ""
    for SQLite alone)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with postgres_if_needed(args.backend, args.pg_url) as admin_url:
            return run_loop(main(args, folder, admin_url))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def warm_up() -> int:
    """Run once in a process pool before anything is timed: its worker is spawned then, not
    inside a measured window."""
    return os.getpid()
