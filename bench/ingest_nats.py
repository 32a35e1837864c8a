#!/usr/bin/env python3
"""NATS ingest, publish-to-queryable latency and query load of `connledger serve`, against two
baselines, on SQLite and on PostgreSQL.

    .venv/bin/python bench/ingest_nats.py                          # both backends, 100k events
    .venv/bin/python bench/ingest_nats.py --backend sqlite --events 20000 --repeat 3

Each phase gets its own nats-server (JetStream, store in a temporary folder, free port) and,
where a database is used, a fresh one (a SQLite file in the temporary folder, or a PostgreSQL
database `bench_nats_<random>` that is dropped afterwards). For each backend:

1. (a) the client's ceiling: N events in the CONNECTIONS stream, read by a plain nats-py durable
   pull consumer, `fetch(500)` and ack each message. Messages/s. (No database: the same figure
   for both backends, measured again next to each so that the ratio compares neighbours.)
2. (b) a naive FastStream 0.7 subscriber: pull consumer with a batch of one, and per message one
   SQLAlchemy async transaction inserting one row into a plain table, on the same backend with
   the service's engine settings. Capped at --naive-cap messages or --naive-seconds.
3. the service: N events published (js.publish_async, into the CONNECTIONS stream created as
   the service creates it) before `connledger serve` starts on a fresh database. The records,
   read back over `ledger.replay`, give each batch's start (recordedAt is stamped when a
   batch's transaction begins) and first position. Sustained rate: the events appended between
   the first batch begun after the service said "ready" and the last batch, over the time
   between them (before "ready" its relay child is still starting, on one of the same two
   cores). Also printed: the rate from the first batch (unique events / (last recordedAt -
   first recordedAt), which counts the last batch's events but not its time), and the wall
   time from spawning the process to the head reaching the number of unique events (polled
   with `ledger.sessions.x.count` and minPosition).
4. publish-to-queryable latency at --latency-rate events/s for --latency-seconds (fresh service
   and database): a paced publisher in a child process stamps each event; a core NATS
   subscription on `ledger.records.>` stamps its record (the relay publishes after commit, so
   this upper-bounds "queryable"); count requests with minPosition sample it as well. The
   record's recordedAt splits each delay into before the append began (waiting in the stream,
   fetch, decode, hooks) and after (append, commit, ack, relay).
5. the count query under ingest: --query-rate requests/s of `ledger.sessions.<id>.count` for
   --query-seconds (paced, concurrent), while the child publishes --latency-rate events/s.
   Baseline (c), in the other seconds of the same window and at the same rate: a bare nats-py
   responder in a process of its own answering a constant, the floor that the client,
   nats-server and the machine set for any responder. For reference, first 200 requests one at
   a time and 3 s of the same paced load, both idle.

Diagnostics: for each measured window the CPU used by the service (its relay process included),
its nats-server, PostgreSQL, this benchmark and every other process on the machine (a shared
machine is noisy: the last figure says how much); --profile-dir records each service with
py-spy (the serve process and its relay child). The benchmark's own clients run on uvloop.
Progress goes to stderr, the summary table to stdout. Timestamps of different processes are
compared on CLOCK_MONOTONIC (time.perf_counter on Linux). --repeat R runs every phase R times
and prints medians.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.errors
import orjson
import uvloop
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as ConsumerAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.events import Event, decode  # noqa: E402
from service.ledger.database import create_engine  # noqa: E402
from service.nats.embedded import find_binary  # noqa: E402
from service.nats.streams import ensure_connections_stream  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.simulation.traffic import generate  # noqa: E402

CONNLEDGER = Path(sys.executable).parent / "connledger"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
# The service's defaults, whatever LEDGER_* variables this process has (the service child gets
# none of them either): stream name, subject prefix.
DEFAULTS = Settings.model_construct()
PROBE_SUBJECT = "ledger.sessions.x.count"
# py-spy from PATH, else beside this interpreter (pip installs it into the virtual environment).
PY_SPY = (
    os.environ.get("BENCH_PY_SPY") or shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def now() -> float:
    return time.perf_counter()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values; nan when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CpuWindow:
    """CPU seconds every process used between start() and stop(), from /proc (Linux), grouped
    into the service, its nats-server, this benchmark (with its publisher child), PostgreSQL
    (the backends serving our database and the server's own background processes), and
    everything else on the machine, other databases' backends included: on a shared machine
    the last one says how noisy it was. A process that ended inside the window is missed."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self) -> None:
        self.before: dict[int, tuple[str, float]] = {}
        self.started = 0.0

    @classmethod
    def snapshot(cls) -> dict[int, tuple[str, float]]:
        taken: dict[int, tuple[str, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    raw = stat.read().decode(errors="replace")
            except OSError:
                continue
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            if comm.startswith("postgres"):
                # A backend's title names its database: "postgres: user db 127.0.0.1(…) idle".
                with contextlib.suppress(OSError), open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    comm = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            fields = raw[raw.rindex(")") + 2 :].split()
            # comm, then "parent pid|CPU seconds" (the parent tells the service's relay apart)
            taken[int(entry.name)] = (f"{comm}\0{fields[1]}", (int(fields[11]) + int(fields[12])) / cls.TICK)
        return taken

    def start(self) -> None:
        self.before = self.snapshot() if sys.platform == "linux" else {}
        self.started = now()

    def stop(
        self, service: Service, server: NatsServer, database_url: str = "", bench_pids: Sequence[int] = ()
    ) -> Figures:
        if sys.platform != "linux":
            return {}
        seconds = now() - self.started
        groups = {
            "cpu_service": 0.0,
            "cpu_nats": 0.0,
            "cpu_bench": 0.0,
            "cpu_postgres": 0.0,
            "cpu_other": 0.0,
        }
        mine = {os.getpid(), *(p.pid for p in multiprocessing.active_children()), *bench_pids}
        for pid, (tagged, used) in self.snapshot().items():
            spent = used - self.before.get(pid, (tagged, 0.0))[1]
            comm, _, parent = tagged.partition("\0")
            if service.process is not None and service.process.pid in (pid, int(parent or 0)):
                # The service and its children (the relay process).
                groups["cpu_service"] += spent
            elif server.process is not None and pid == server.process.pid:
                groups["cpu_nats"] += spent
            elif pid in mine:
                groups["cpu_bench"] += spent
            elif comm.startswith("postgres"):
                backend = re.match(r"postgres: (?:\S+: )?\S+ (\S+) [\d.:a-f\[\]]+\(\d+\)", comm)
                ours = backend is None or database_url.endswith("/" + backend.group(1))
                groups["cpu_postgres" if ours else "cpu_other"] += spent
            else:
                groups["cpu_other"] += spent
        # As a share of one core over the window.
        return {key: value / seconds * 100 for key, value in groups.items()} | {"cpu_window": seconds}


# --------------------------------------------------------------------------------------------
# Traffic


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


def run_loop(coroutine: Any) -> Any:
    """The benchmark's own clients run on uvloop, as the service does: on the default loop
    their own scheduling delays (several ms at p99 on this busy 2-core machine) would be
    measured as the service's latency."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def warm_up() -> int:
    return os.getpid()


# --------------------------------------------------------------------------------------------
# nats-server, databases, the service


class NatsServer:
    """A nats-server of our own: JetStream, store in `folder`, a free port on 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""

    async def __aenter__(self) -> NatsServer:
        port = free_port()
        command = [str(find_binary()), "-js", "-sd", str(self.folder / "js"), "-a", "127.0.0.1"]
        command += ["-p", str(port), "-l", str(self.folder / "nats.log")]
        self.process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        self.url = f"nats://127.0.0.1:{port}"
        deadline = now() + 15
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(f"nats-server exited ({self.process.returncode}), see {self.folder}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                return self
            except OSError:
                if now() > deadline:
                    await self.__aexit__()
                    raise RuntimeError(f"nats-server did not listen on {port}") from None
                await asyncio.sleep(0.05)

    async def __aexit__(self, *_: object) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


class Backend:
    name: str

    async def create(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        raise NotImplementedError

    async def drop(self, url: str) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[str]:
        url = await self.create()
        try:
            yield url
        finally:
            await self.drop(url)


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def create(self) -> str:
        path = self.folder / f"ledger-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite+aiosqlite:///{path}"

    async def drop(self, url: str) -> None:
        remove_sqlite(url.removeprefix("sqlite+aiosqlite:///"))


def remove_sqlite(path: str) -> None:
    """The database, its WAL and shared memory, and the service's lease files beside it."""
    database = Path(path)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(path + suffix).unlink(missing_ok=True)
    for lease in database.parent.glob(database.name + ".lease-*"):
        lease.unlink(missing_ok=True)


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.base = admin_dsn.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://", 1)

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def create(self) -> str:
        name = f"bench_nats_{uuid.uuid4().hex[:10]}"
        await self._admin(f"CREATE DATABASE {name}")
        return f"{self.base}/{name}"

    async def drop(self, url: str) -> None:
        name = url.rpartition("/")[2]
        assert re.fullmatch(r"bench_nats_[0-9a-f]{10}", name), name
        await self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Service:
    """`connledger serve` as a child process, on the given NATS server and database."""

    def __init__(
        self, nats_url: str, database_url: str, folder: Path, synchronous: str, profile: Path | None = None
    ) -> None:
        self.folder = folder
        self.profile = profile  # py-spy writes the service's samples here (collapsed stacks)
        self.profiler: asyncio.subprocess.Process | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.env |= {
            "LEDGER_NATS_URL": nats_url,
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_VAR_DIR": str(folder / "var"),
            "LEDGER_HTTP_PORT": str(free_port()),
            "LEDGER_SQLITE_SYNCHRONOUS": synchronous,
        }
        self.log = folder / "serve.log"
        self.process: asyncio.subprocess.Process | None = None
        self.spawned = self.ready = 0.0
        self.disconnects_at_ready = 0
        self._drain: asyncio.Task[None] | None = None

    async def start(self, within: float = 60) -> None:
        with self.log.open("wb") as log:
            self.spawned = now()
            self.process = await asyncio.create_subprocess_exec(
                str(CONNLEDGER),
                "serve",
                env=self.env,
                cwd=self.folder,  # no stray .env is read
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), within)
            if not line:
                raise RuntimeError(f"connledger serve did not start:\n{self.tail()}")
            if line.startswith(b"ready"):
                self.ready = now()
                self.disconnects_at_ready = self.disconnect_lines()
                break
        self._drain = asyncio.create_task(self._read_rest())
        if self.profile is not None:
            self.profiler = await asyncio.create_subprocess_exec(
                PY_SPY,
                "record",
                "--pid",
                str(self.process.pid),
                "--subprocesses",
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(self.profile),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )

    async def _read_rest(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while await self.process.stdout.readline():
            pass

    async def stop(self) -> int | None:
        profiler, self.profiler = self.profiler, None
        if profiler is not None and profiler.returncode is None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                await asyncio.wait_for(profiler.wait(), 30)
            except TimeoutError:
                profiler.kill()
                await profiler.wait()
        process, self.process = self.process, None
        if process is None:
            return None
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 45)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._drain is not None:
            self._drain.cancel()
        return process.returncode

    def check(self) -> None:
        """Raise if the service exited on its own."""
        if self.process is not None and self.process.returncode is not None:
            raise RuntimeError(f"connledger serve exited ({self.process.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def disconnect_lines(self) -> int:
        # service/nats/connect.py logs "nats: reconnected" each time it got a lost connection back.
        return self.log.read_text(errors="replace").count("nats: reconnected")

    def disconnects(self) -> int:
        """How often the service lost its NATS connection after it said "ready" (a slow
        consumer, typically: the server drops a client that does not read fast enough)."""
        return self.disconnect_lines() - self.disconnects_at_ready

    def ingest_summary(self) -> tuple[int, int] | None:
        """(batches, messages) from the log line the ingestor writes when it stops."""
        found = re.findall(r"ingest stopped after (\d+) batches, (\d+) messages", self.log.read_text())
        return (int(found[-1][0]), int(found[-1][1])) if found else None


@contextlib.asynccontextmanager
async def running_service(
    ctx: Context, nats_url: str, database_url: str, folder: Path, phase: str, backend: str
) -> AsyncIterator[Service]:
    profile = None
    if ctx.args.profile_dir is not None:
        profile = ctx.args.profile_dir / f"{phase}-{backend}-{int(time.time())}.txt"
    service = Service(nats_url, database_url, folder, ctx.args.synchronous, profile)
    service.env |= dict(setting.split("=", 1) for setting in ctx.args.service_setting)
    try:
        await service.start()
        yield service
    except BaseException:
        say(f"  the phase failed; the last lines of the service's log:\n{service.tail()}")
        raise
    finally:
        code = await service.stop()
        if code not in (0, None):
            say(f"  warning: connledger serve exited {code}; log {service.log}:\n{service.tail()}")


async def ask(nc: Client, subject: str, body: dict[str, Any] | None = None, within: float = 10) -> Any:
    reply = await nc.request(subject, orjson.dumps(body) if body is not None else b"", timeout=within)
    return orjson.loads(reply.data)


REQUEST_ERRORS = (nats.errors.TimeoutError, TimeoutError, nats.errors.NoRespondersError)


async def wait_for_head(nc: Client, service: Service, position: int, within: float) -> tuple[float, int]:
    """Poll until the ledger's head reaches `position`: (the time it did, the head)."""
    deadline = now() + within
    head = 0
    while now() < deadline:
        service.check()
        try:
            head = int((await ask(nc, PROBE_SUBJECT, {"minPosition": position}))["position"])
        except REQUEST_ERRORS:
            await asyncio.sleep(0.1)
            continue
        if head >= position:
            return now(), head
    raise TimeoutError(f"the head reached {head}, not {position}, within {within:.0f} s")


async def replay(nc: Client, request: dict[str, Any], within: float = 30) -> list[dict[str, Any]]:
    """`ledger.replay`: the records sent to our inbox until the end marker."""
    inbox = nc.new_inbox()
    records: list[dict[str, Any]] = []
    end: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def collect(message: Msg) -> None:
        if message.headers and "Ledger-Replay-End" in message.headers:
            if not end.done():
                end.set_result(None)
        else:
            records.append(orjson.loads(message.data))

    subscription = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish("ledger.replay", orjson.dumps(request), reply=inbox)
        await asyncio.wait_for(end, within)
    finally:
        await subscription.unsubscribe()
    return records


def steady_rate(records: Sequence[dict[str, Any]], since_ms: float) -> float:
    """Records a second from the start of the first batch begun after `since_ms` (wall clock)
    to the start of the last batch: the events appended in between over the time between.

    A batch's records share its recordedAt (stamped when its transaction begins), so no batch
    is counted whose time is not in the span; nan when fewer than two batches begin after."""
    starts: list[tuple[int, int]] = []  # (recordedAt, position of the batch's first record)
    for record in records:
        if not starts or record["recordedAt"] != starts[-1][0]:
            starts.append((record["recordedAt"], record["position"]))
    window = [start for start in starts if start[0] >= since_ms]
    if len(window) < 2:
        return math.nan
    (t0, p0), (t1, p1) = window[0], window[-1]
    return (p1 - p0) / ((t1 - t0) / 1000)


# --------------------------------------------------------------------------------------------
# The phases. Each returns its figures; --repeat takes the median of each figure.

Figures = dict[str, float]


@dataclass
class Context:
    args: argparse.Namespace
    folder: Path
    pool: concurrent.futures.ProcessPoolExecutor
    traffic: Traffic  # the N events of phases 1-3
    paced: Traffic  # phase 4's events
    loaded: Traffic  # phase 5's events

    def subfolder(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.folder))


async def phase_client_ceiling(ctx: Context, backend: Backend) -> Figures:
    """(a) nats-py durable pull consumer, fetch(500) + ack each, over the N stored events."""
    traffic = ctx.traffic
    async with NatsServer(ctx.subfolder("nats-a")) as server:
        nc = await nats.connect(server.url)
        try:
            await ensure_connections_stream(nc, DEFAULTS)
            await publish_all(nc, traffic)
            js = nc.jetstream()
            durable = "bench-client-ceiling"
            # The consumer configuration of service/nats/ingest.py.
            subscription = await js.pull_subscribe(
                f"{DEFAULTS.subject_prefix}.>",
                durable=durable,
                stream=DEFAULTS.connections_stream,
                config=ConsumerConfig(
                    ack_policy=ConsumerAckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=60,
                    max_deliver=-1,
                    max_ack_pending=20_000,
                ),
            )
            received = 0
            started = now()
            while received < len(traffic):
                messages = await subscription.fetch(500, timeout=10)
                for message in messages:
                    await message.ack()
                received += len(messages)
            await nc.flush()
            seconds = now() - started
            # The server applies acks asynchronously: all of them should land within moments.
            deadline = now() + 5
            while (info := await js.consumer_info(DEFAULTS.connections_stream, durable)).num_ack_pending:
                if now() > deadline:
                    say(f"  warning: {info.num_ack_pending} acks still pending 5 s after the last fetch")
                    break
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
    return {"rate": received / seconds, "seconds": seconds, "messages": received}


async def phase_naive_faststream(ctx: Context, backend: Backend) -> Figures:
    """(b) FastStream pull consumer, batch of one, one SQLAlchemy transaction per event."""
    from faststream import AckPolicy
    from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
    from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text, func, select

    count = min(len(ctx.traffic), ctx.args.naive_cap)
    async with NatsServer(ctx.subfolder("nats-b")) as server, backend.fresh() as url:
        nc = await nats.connect(server.url)
        try:
            await ensure_connections_stream(nc, DEFAULTS)
            await publish_all(nc, ctx.traffic, count)
        finally:
            await nc.close()

        # The service's engine settings (SQLite: WAL, the same synchronous pragma).
        engine = create_engine(url, sqlite_synchronous=ctx.args.synchronous)
        metadata = MetaData()
        table = Table(
            "naive_events",
            metadata,
            Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
            Column("event_id", Text),
            Column("subject", Text),
            Column("body", Text),
        )
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

        broker = NatsBroker(server.url, logger=None)
        handled = 0
        finished = asyncio.Event()

        @broker.subscriber(
            f"{DEFAULTS.subject_prefix}.>",
            stream=JStream(DEFAULTS.connections_stream, declare=False),
            durable="bench-naive",
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            ack_policy=AckPolicy.NACK_ON_ERROR,  # the handler's policy: ack after it returned
        )
        async def handle(body: dict[str, Any], message: NatsMessage) -> None:
            nonlocal handled
            async with engine.begin() as connection:
                await connection.execute(
                    table.insert().values(
                        event_id=body.get("id"),
                        subject=message.raw_message.subject,
                        body=message.body.decode(),
                    )
                )
            handled += 1
            if handled >= count:
                finished.set()

        try:
            await broker.start()
            started = now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), ctx.args.naive_seconds)
            done, seconds = handled, now() - started
        finally:
            await broker.stop()
            async with engine.connect() as connection:
                rows = (await connection.execute(select(func.count()).select_from(table))).scalar_one()
            await engine.dispose()
        if rows < done:
            say(f"  warning: {done} handled but {rows} rows in the table")
    return {"rate": done / seconds, "seconds": seconds, "messages": done}


async def phase_service_ingest(ctx: Context, backend: Backend) -> Figures:
    """The service reading N events that wait in the stream when it starts."""
    traffic = ctx.traffic
    folder = ctx.subfolder(f"serve-ingest-{backend.name}")
    async with NatsServer(ctx.subfolder("nats")) as server, backend.fresh() as url:
        nc = await nats.connect(server.url)
        try:
            await ensure_connections_stream(nc, DEFAULTS)
            await publish_all(nc, traffic)
            async with running_service(ctx, server.url, url, folder, "service", backend.name) as service:
                window = CpuWindow()
                window.start()
                within = max(120.0, len(traffic) / 500)
                reached, head = await wait_for_head(nc, service, traffic.unique, within)
                cpu = window.stop(service, server, url)
                wall_offset = time.time() - now()
                _, final = await wait_for_head(nc, service, traffic.unique, 60)
                records = await replay(nc, {}, within=120)
        finally:
            await nc.close()
        batches = service.ingest_summary()
    if final != traffic.unique:
        say(f"  warning: head {final}, expected {traffic.unique} unique events")
    span = (records[-1]["recordedAt"] - records[0]["recordedAt"]) / 1000
    # Once the service said "ready": its relay child is up by then, whose start-up (a second
    # of imports on one of the two cores) slows the first batches of a short run.
    steady = steady_rate(records, (service.ready + wall_offset) * 1000)
    if math.isnan(steady):
        say("  warning: fewer than two batches after ready (more --events?); sustained from the first batch")
        steady = traffic.unique / span
    figures = {
        "rate": traffic.unique / span,
        "steady": steady,
        "span": span,
        "wall": reached - service.spawned,
        "wall_ready": reached - service.ready,
        "startup": service.ready - service.spawned,
        "head": head,
        "disconnects": service.disconnects(),
        **cpu,
    }
    if batches:
        figures["mean_batch"] = batches[1] / batches[0]
    return figures


async def phase_latency(ctx: Context, backend: Backend) -> Figures:
    """Paced publishing; when each event's record shows up on ledger.records.>."""
    args, traffic = ctx.args, ctx.paced
    folder = ctx.subfolder(f"serve-latency-{backend.name}")
    async with (
        NatsServer(ctx.subfolder("nats")) as server,
        backend.fresh() as url,
        running_service(ctx, server.url, url, folder, "latency", backend.name) as service,
    ):
        listener = await nats.connect(server.url)
        asker = await nats.connect(server.url)
        received: dict[str, float] = {}
        recorded: dict[str, float] = {}  # the record's recordedAt, on perf_counter's clock
        # recordedAt is wall-clock milliseconds, taken when the batch's write transaction begins.
        wall_offset = time.time() - now()
        all_received = asyncio.Event()
        samples: list[tuple[int, float, bool]] = []  # (event index, answered at, reached?)

        async def on_record(message: Msg) -> None:
            stamp = now()
            event_id = message.headers.get("Nats-Msg-Id") if message.headers else None
            if event_id is not None and event_id not in received:
                received[event_id] = stamp
                recorded[event_id] = orjson.loads(message.data)["recordedAt"] / 1000 - wall_offset
                if len(received) >= traffic.unique:
                    all_received.set()

        async def sample(start_at: float) -> None:
            # Every 100 ms: the newest event due by now, asked for with its own position.
            tick = start_at + 0.05
            while True:
                await asyncio.sleep(max(0.0, tick - now()))
                tick += 0.1
                index = min(len(traffic) - 1, int((now() - start_at) * args.latency_rate))
                while index > 0 and not traffic.positions[index]:
                    index -= 1
                position = traffic.positions[index]
                subject = f"ledger.sessions.{traffic.sessions[index]}.count"
                try:
                    answer = await ask(asker, subject, {"minPosition": position})
                    samples.append((index, now(), answer["position"] >= position))
                except REQUEST_ERRORS:
                    samples.append((index, now(), False))
                if index >= len(traffic) - 1:
                    return

        sampler: asyncio.Task[None] | None = None
        try:
            await listener.subscribe("ledger.records.>", cb=on_record, pending_msgs_limit=1_000_000)
            await listener.flush()
            start_at = now() + 0.5
            publishing = asyncio.get_running_loop().run_in_executor(
                ctx.pool,
                paced_publish,
                server.url,
                traffic.subjects,
                traffic.bodies,
                args.latency_rate,
                start_at,
            )
            sampler = asyncio.create_task(sample(start_at))
            window = CpuWindow()
            window.start()
            stamps = await asyncio.wait_for(publishing, len(traffic) / args.latency_rate + 60)
            cpu = window.stop(service, server, url)
            await asyncio.wait_for(sampler, 30)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_received.wait(), 30)
        finally:
            if sampler is not None:
                sampler.cancel()
            await listener.close()
            await asker.close()

    delays = [
        received[event_id] - stamps[i]
        for i, event_id in enumerate(traffic.ids)
        if traffic.positions[i] and event_id in received
    ]
    to_append = [
        recorded[event_id] - stamps[i]
        for i, event_id in enumerate(traffic.ids)
        if traffic.positions[i] and event_id in recorded
    ]
    after_append = [received[event_id] - recorded[event_id] for event_id in recorded]
    asked = [answered - stamps[index] for index, answered, reached in samples if reached]
    batches = service.ingest_summary()
    ms = 1000.0
    return {
        "mean_batch": batches[1] / batches[0] if batches else float("nan"),
        "p50": percentile(delays, 50) * ms,
        "p90": percentile(delays, 90) * ms,
        "p99": percentile(delays, 99) * ms,
        "max": max(delays) * ms,
        "missing": traffic.unique - len(delays),
        "to_append_p50": percentile(to_append, 50) * ms,
        "to_append_p99": percentile(to_append, 99) * ms,
        "after_append_p50": percentile(after_append, 50) * ms,
        "after_append_p99": percentile(after_append, 99) * ms,
        "publish_rate": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
        "ask_p50": percentile(asked, 50) * ms,
        "ask_p99": percentile(asked, 99) * ms,
        "ask_max": max(asked, default=float("nan")) * ms,
        "ask_n": len(asked),
        "ask_short": len(samples) - len(asked),
        "disconnects": service.disconnects(),
        **cpu,
    }


# Baseline (c) of phase 5: the least any NATS responder can do on this machine under the same
# load. A process of its own that answers a constant of the count answer's size at once: what
# its requests take is the client, nats-server and the machine, and none of the service.
FLOOR_SUBJECT = "bench.floor.count"
FLOOR_RESPONDER = """
import asyncio, sys
import nats, uvloop

async def main():
    nc = await nats.connect(sys.argv[1])
    answer = b'{"sessionId":"floor-session-0000","count":3,"position":123456}'

    async def respond(message):
        await message.respond(answer)

    await nc.subscribe(sys.argv[2], cb=respond)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


@contextlib.asynccontextmanager
async def floor_responder(url: str) -> AsyncIterator[int]:
    """Start the bare responder on `FLOOR_SUBJECT`; yields its pid once it is subscribed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOR_RESPONDER, url, FLOOR_SUBJECT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"the bare responder did not start (it said {line!r})")
        yield process.pid
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@dataclass
class Burst:
    """Paced count requests: latencies of the answered ones, how many failed, and how late the
    client sent each request (its own lag, which would otherwise pass for the service's)."""

    latencies: list[float]
    failures: int
    lags: list[float]
    rate: float


async def request_burst(
    nc: Client, sessions: list[str], rate: float, seconds: float, begin: float, floor: Burst | None = None
) -> Burst:
    """`rate` count requests/s for `seconds`, each sent without waiting for the one before.
    With `floor`, the window is twice as long, and in every other second the requests go to the
    bare responder instead (recorded in `floor`): both at the same rate, interleaved in time,
    so that both meet the same machine."""
    total = int(rate * seconds * (2 if floor is not None else 1))
    burst = Burst([], 0, [], 0.0)
    last_answer = begin

    async def one(subject: str, into: Burst) -> None:
        nonlocal last_answer
        sent = now()
        try:
            await nc.request(subject, b"", timeout=2)
        except REQUEST_ERRORS:
            into.failures += 1
            return
        last_answer = now()
        into.latencies.append(last_answer - sent)

    tasks: set[asyncio.Task[None]] = set()
    await asyncio.sleep(max(0.0, begin - now()))
    issued = 0
    while issued < total:
        due = min(total, int((now() - begin) * rate) + 1)
        while issued < due:
            into = floor if floor is not None and int(issued / rate) % 2 else burst
            into.lags.append(now() - (begin + issued / rate))
            subject = (
                FLOOR_SUBJECT
                if into is floor
                else f"ledger.sessions.{sessions[(issued * 7919) % len(sessions)]}.count"
            )
            task = asyncio.create_task(one(subject, into))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            issued += 1
        await asyncio.sleep(0.001)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    if floor is None:
        burst.rate = len(burst.latencies) / max(last_answer - begin, 1e-9)
    else:
        # Each had every other second of the window.
        burst.rate = len(burst.latencies) / seconds
        floor.rate = len(floor.latencies) / seconds
    return burst


async def phase_query_load(ctx: Context, backend: Backend) -> Figures:
    """Count requests at a steady rate while a child process publishes events, in alternate
    seconds with the same requests to a bare responder (baseline (c)); before that, the same
    requests with no ingest, and one at a time, for reference."""
    args, traffic = ctx.args, ctx.loaded
    folder = ctx.subfolder(f"serve-query-{backend.name}")
    ms = 1000.0
    async with (
        NatsServer(ctx.subfolder("nats")) as server,
        backend.fresh() as url,
        running_service(ctx, server.url, url, folder, "queries", backend.name) as service,
        floor_responder(server.url) as floor_pid,
    ):
        nc = await nats.connect(server.url)
        try:
            names = sorted(set(traffic.sessions))
            # One request at a time, nothing else going on: the floor of the figures below.
            single: list[float] = []
            for i in range(200):
                sent = now()
                with contextlib.suppress(*REQUEST_ERRORS):
                    await nc.request(f"ledger.sessions.{names[i % len(names)]}.count", b"", timeout=2)
                    single.append(now() - sent)
            # The same paced load with no ingest, for a few seconds.
            idle = await request_burst(nc, names, args.query_rate, 3.0, now() + 0.1)
            # Whatever the service has queued is answered before this (one subscription).
            await wait_for_head(nc, service, 0, 120)

            start_at = now() + 0.5
            publishing = asyncio.get_running_loop().run_in_executor(
                ctx.pool,
                paced_publish,
                server.url,
                traffic.subjects,
                traffic.bodies,
                args.latency_rate,
                start_at,
            )
            # Requests start one second into the ingest and end before it does.
            window = CpuWindow()
            window.start()
            floor = Burst([], 0, [], 0.0)
            loaded = await request_burst(
                nc, names, args.query_rate, args.query_seconds, start_at + 1.0, floor
            )
            cpu = window.stop(service, server, url, [floor_pid])
            stamps = await asyncio.wait_for(publishing, len(traffic) / args.latency_rate + 60)
            _, head = await wait_for_head(nc, service, traffic.unique, 120)
        finally:
            await nc.close()
    return {
        "p50": percentile(loaded.latencies, 50) * ms,
        "p90": percentile(loaded.latencies, 90) * ms,
        "p99": percentile(loaded.latencies, 99) * ms,
        "max": max(loaded.latencies, default=float("nan")) * ms,
        "rate": loaded.rate,
        "failures": loaded.failures,
        "lag_p99": percentile(loaded.lags, 99) * ms,
        "floor_p50": percentile(floor.latencies, 50) * ms,
        "floor_p90": percentile(floor.latencies, 90) * ms,
        "floor_p99": percentile(floor.latencies, 99) * ms,
        "floor_rate": floor.rate,
        "floor_failures": floor.failures,
        "idle_p50": percentile(idle.latencies, 50) * ms,
        "idle_p99": percentile(idle.latencies, 99) * ms,
        "idle_rate": idle.rate,
        "idle_failures": idle.failures,
        "single_p50": percentile(single, 50) * ms,
        "single_p99": percentile(single, 99) * ms,
        "publish_rate": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
        "head_ok": float(head == traffic.unique),
        "disconnects": service.disconnects(),
        **cpu,
    }


# --------------------------------------------------------------------------------------------
# Running and reporting

PHASES: list[tuple[str, Callable[[Context, Backend], Any]]] = [
    ("client", phase_client_ceiling),
    ("naive", phase_naive_faststream),
    ("service", phase_service_ingest),
    ("latency", phase_latency),
    ("queries", phase_query_load),
]


def median_figures(runs: list[Figures]) -> Figures:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def bench_backend(ctx: Context, backend: Backend) -> dict[str, Figures]:
    results: dict[str, Figures] = {}
    for name, phase in PHASES:
        if name not in ctx.args.phases:
            continue
        runs = []
        for attempt in range(ctx.args.repeat):
            started = now()
            figures = await phase(ctx, backend)
            runs.append(figures)
            shown = ", ".join(f"{k}={v:,.4g}" for k, v in figures.items())
            say(f"  {backend.name} {name} #{attempt + 1} ({now() - started:.0f} s): {shown}")
        results[name] = median_figures(runs)
    return results


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if value != value:  # nan
        return "n/a"
    if higher_is_better:
        return "met" if value >= target else f"MISSED by {(target - value) / target:.0%}"
    return "met" if value < target else f"MISSED: {value / target:.1f}x the target"


def cpu_note(figures: Figures) -> str:
    """Who used the CPU during the measured window, in % of one core (2 cores = 200 %)."""
    if "cpu_service" not in figures:
        return ""
    parts = [f"service {figures['cpu_service']:.0f}%", f"nats-server {figures['cpu_nats']:.0f}%"]
    if figures["cpu_postgres"] >= 1:
        parts.append(f"postgres {figures['cpu_postgres']:.0f}%")
    parts += [f"bench {figures['cpu_bench']:.0f}%", f"other processes {figures['cpu_other']:.0f}%"]
    note = "CPU: " + ", ".join(parts)
    if figures.get("disconnects"):
        note += f"; the service lost its NATS connection {figures['disconnects']:.0f} time(s)"
    return note


def report(results: dict[str, dict[str, Figures]], ctx: Context, command: str) -> None:
    args = ctx.args
    rows: list[tuple[str, str, str, str, str]] = []

    def row(backend: str, what: str, value: str, target: str = "", note: str = "") -> None:
        rows.append((backend, what, value, target, note))

    for backend, r in results.items():
        client, naive, service = r.get("client"), r.get("naive"), r.get("service")
        if client:
            row(backend, "(a) nats-py fetch(500)+ack", f"{client['rate']:,.0f} msg/s")
        if naive:
            row(
                backend,
                "(b) FastStream batch of 1, 1 txn/event",
                f"{naive['rate']:,.0f} msg/s",
                note=f"{naive['messages']:,.0f} msgs in {naive['seconds']:.1f} s",
            )
        if service:
            row(
                backend,
                "service sustained (recordedAt)",
                f"{service['steady']:,.0f} ev/s",
                note=f"batches begun after ready; from the first batch {service['rate']:,.0f} ev/s "
                f"({ctx.traffic.unique:,} unique in {service['span']:.2f} s)"
                + (f", mean batch {service['mean_batch']:.0f}" if "mean_batch" in service else ""),
            )
            row(
                backend,
                "service wall: spawn -> head = N",
                f"{service['wall']:.2f} s",
                note=f"ready after {service['startup']:.2f} s; ready -> head {service['wall_ready']:.2f} s "
                f"= {len(ctx.traffic) / service['wall_ready']:,.0f} msg/s",
            )
            if note := cpu_note(service):
                row(backend, "  during ingest", "", note=note)
            if client:
                ratio = service["steady"] / client["rate"]
                whole = service["rate"] / client["rate"]
                row(
                    backend,
                    "ratio service / (a)",
                    f"{ratio:.2f}",
                    ">= 0.70",
                    verdict(ratio, 0.70, True) + f"; from the first batch {whole:.2f}",
                )
            if naive:
                ratio = service["steady"] / naive["rate"]
                row(backend, "ratio service / (b)", f"{ratio:.1f}", ">= 10", verdict(ratio, 10, True))
        if latency := r.get("latency"):
            row(
                backend,
                f"publish -> ledger.records, {args.latency_rate:,.0f}/s",
                f"p50 {latency['p50']:.1f} / p90 {latency['p90']:.1f} / p99 {latency['p99']:.1f} / "
                f"max {latency['max']:.1f} ms",
                "p99 < 100 ms",
                verdict(latency["p99"], 100, False)
                + (f"; {latency['missing']:.0f} records missing" if latency["missing"] else ""),
            )
            row(
                backend,
                "  count with minPosition (sampled)",
                f"p50 {latency['ask_p50']:.1f} / p99 {latency['ask_p99']:.1f} / "
                f"max {latency['ask_max']:.1f} ms",
                note=f"{latency['ask_n']:.0f} samples, publisher at {latency['publish_rate']:,.0f}/s, "
                f"mean ingest batch {latency['mean_batch']:.0f}"
                + (f", {latency['ask_short']:.0f} answered short" if latency["ask_short"] else ""),
            )
            row(
                backend,
                "  split at recordedAt (append start)",
                f"before p50 {latency['to_append_p50']:.1f} / p99 {latency['to_append_p99']:.1f} ms; "
                f"after p50 {latency['after_append_p50']:.1f} / p99 {latency['after_append_p99']:.1f} ms",
                note="before: waiting in the stream, fetch, decode; after: append, commit, ack, relay",
            )
            if note := cpu_note(latency):
                row(backend, "  while publishing", "", note=note)
        if queries := r.get("queries"):
            row(
                backend,
                f"count query, {args.query_rate:,.0f}/s under ingest",
                f"p50 {queries['p50']:.2f} / p90 {queries['p90']:.2f} / p99 {queries['p99']:.2f} / "
                f"max {queries['max']:.1f} ms",
                "p99 < 5 ms",
                verdict(queries["p99"], 5, False),
            )
            row(
                backend,
                "  achieved request rate",
                f"{queries['rate']:,.0f} req/s",
                note=f"{queries['failures']:.0f} timed out (2 s); client send lag p99 "
                f"{queries['lag_p99']:.1f} ms; publisher {queries['publish_rate']:,.0f} ev/s",
            )
            excess = queries["p99"] - queries["floor_p99"]
            times = queries["p99"] / queries["floor_p99"]
            row(
                backend,
                "  (c) bare nats-py responder, same load",
                f"p50 {queries['floor_p50']:.2f} / p90 {queries['floor_p90']:.2f} / "
                f"p99 {queries['floor_p99']:.2f} ms",
                "",
                f"service - (c) at p99 {excess:+.2f} ms, service / (c) {times:.2f}; "
                f"{queries['floor_rate']:,.0f} req/s answered, {queries['floor_failures']:.0f} timed out",
            )
            if note := cpu_note(queries):
                row(backend, "  during the requests", "", note=note)
            row(
                backend,
                f"  same {args.query_rate:,.0f}/s, no ingest (3 s)",
                f"p50 {queries['idle_p50']:.2f} / p99 {queries['idle_p99']:.2f} ms",
                note=f"{queries['idle_rate']:,.0f} req/s answered, {queries['idle_failures']:.0f} timed out",
            )
            row(
                backend,
                "  one request at a time, no ingest",
                f"p50 {queries['single_p50']:.2f} / p99 {queries['single_p99']:.2f} ms",
            )

    print()
    print(f"$ {command}")
    print(
        f"{len(ctx.traffic):,} events ({ctx.traffic.unique:,} unique), SQLite synchronous="
        f"{args.synchronous}, {'median of ' + str(args.repeat) if args.repeat > 1 else 'one run'} "
        f"per phase, {os.cpu_count()} cores; CPU in % of one core over the measured window"
    )
    header = ("backend", "measure", "value", "target", "verdict / note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=True)).rstrip())
    print("-" * (sum(widths) + 8 + len(header[4])))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, [*widths, 0], strict=True)).rstrip())


async def amain(args: argparse.Namespace, folder: Path) -> tuple[dict[str, dict[str, Figures]], Context]:
    say(f"generating {args.events:,} events (seed {args.seed}) ...")
    traffic = make_traffic(args.events, args.seed)
    paced = make_traffic(int(args.latency_rate * args.latency_seconds), args.seed + 1)
    # Phase 5's window: the service's seconds and the bare responder's, one second in, and a spare.
    loaded = make_traffic(int(args.latency_rate * (2 * args.query_seconds + 2)), args.seed + 2)
    say(f"  {len(traffic):,} events, {traffic.unique:,} unique")
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results: dict[str, dict[str, Figures]] = {}
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, warm_up)  # spawn it before timing
        ctx = Context(args, folder, pool, traffic, paced, loaded)
        for name in names:
            backend: Backend = SqliteBackend(folder) if name == "sqlite" else PostgresBackend(args.pg_url)
            say(f"{name}:")
            results[name] = await bench_backend(ctx, backend)
    return results, ctx


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--events", type=int, default=100_000, help="events for phases 1-3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each phase (median printed)")
    parser.add_argument(
        "--phases",
        default=",".join(name for name, _ in PHASES),
        help="comma-separated subset of: " + ", ".join(name for name, _ in PHASES),
    )
    parser.add_argument("--naive-cap", type=int, default=20_000, help="messages for baseline (b)")
    parser.add_argument("--naive-seconds", type=float, default=60, help="time cap for baseline (b)")
    parser.add_argument("--latency-rate", type=float, default=2000, help="events/s in phases 4 and 5")
    parser.add_argument("--latency-seconds", type=float, default=15)
    parser.add_argument("--query-rate", type=float, default=1000, help="count requests/s in phase 5")
    parser.add_argument("--query-seconds", type=float, default=10)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="SQLite durability")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=None,
        help="record each service with py-spy (BENCH_PY_SPY or py-spy on PATH) into this folder, as "
        "collapsed stacks; a diagnostic: the profiler's own CPU use skews the figures",
    )
    parser.add_argument(
        "--service-setting",
        action="append",
        default=[],
        metavar="LEDGER_X=VALUE",
        help="a setting for each service started (repeatable), e.g. LEDGER_RELAY_MODE=off",
    )
    args = parser.parse_args()
    for setting in args.service_setting:
        if not setting.startswith("LEDGER_") or "=" not in setting:
            parser.error(f"--service-setting {setting!r}: write it as LEDGER_NAME=VALUE")
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if args.profile_dir is not None:
        args.profile_dir = args.profile_dir.resolve()
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    unknown = args.phases - {name for name, _ in PHASES}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")

    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    command = shlex.join([python, *sys.argv])
    folder = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    try:
        results, ctx = run_loop(amain(args, folder))
    finally:
        if args.keep:
            say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    report(results, ctx, command)


if __name__ == "__main__":
    main()
