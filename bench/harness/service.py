"""`connledger serve` as a child process: started with settings of our own, waited for until it
says "ready" and /readyz agrees, stopped with SIGTERM (it drains: the batch in hand is committed
and acked), optionally recorded by py-spy."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from bench.harness.clock import now
from bench.harness.figures import say
from bench.harness.metrics import Samples, scrape, value
from bench.harness.nats_server import free_port

__all__ = [
    "CONNLEDGER",
    "PY_SPY",
    "Service",
    "add_service_arguments",
    "parse_service_arguments",
    "running_service",
    "service_settings",
]

CONNLEDGER = Path(sys.executable).parent / "connledger"
# py-spy from PATH, else beside this interpreter (pip installs it into the virtual environment).
PY_SPY = (
    os.environ.get("BENCH_PY_SPY") or shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
)


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5):  # raises unless 2xx
        pass


class Service:
    """`connledger serve` as a child process, on the given NATS server and database."""

    def __init__(
        self,
        nats_url: str,
        database_url: str,
        folder: Path,
        synchronous: str,
        profile: Path | None = None,
        settings: Mapping[str, str] = {},
    ) -> None:
        self.folder = folder
        self.profile = profile  # py-spy writes the service's samples here (collapsed stacks)
        self.profiler: asyncio.subprocess.Process | None = None
        # None of this process's LEDGER_* variables: the service's defaults unless given.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.env |= {
            "LEDGER_NATS_URL": nats_url,
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_VAR_DIR": str(folder / "var"),
            "LEDGER_HTTP_PORT": str(free_port()),
            "LEDGER_SQLITE_SYNCHRONOUS": synchronous,
            **settings,
        }
        self.log = folder / "serve.log"
        self.process: asyncio.subprocess.Process | None = None
        self.http_url = ""
        self.spawned = self.ready = 0.0
        self.disconnects_at_ready = 0
        self._drain: asyncio.Task[None] | None = None

    async def start(self, within: float = 60) -> None:
        """Spawn it and wait for its "ready" line on stdout (`ready` is that instant)."""
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
            if line.startswith(b"HTTP"):
                self.http_url = line.split()[1].decode()
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

    async def wait_ready(self, within: float = 30) -> None:
        """Until GET /readyz answers 200 (NATS and database reachable, consumer running)."""
        deadline = now() + within
        while True:
            self.check()
            try:
                await asyncio.to_thread(_get, f"{self.http_url}/readyz")
                return
            except (urllib.error.URLError, OSError) as error:
                if now() > deadline:
                    raise RuntimeError(f"/readyz not ready after {within:.0f} s: {error}") from None
                await asyncio.sleep(0.05)

    async def _read_rest(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while await self.process.stdout.readline():
            pass

    async def stop(self) -> int | None:
        """SIGTERM and wait for the drain; its exit status (None if it never started)."""
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

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def check(self) -> None:
        """Raise if the service exited on its own."""
        if self.process is not None and self.process.returncode is not None:
            raise RuntimeError(f"connledger serve exited ({self.process.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def disconnect_lines(self) -> int:
        # service/nats/connect.py logs "nats: reconnected" each time it got a lost connection
        # back (the relay process's connection too); no metric counts these.
        return self.log.read_text(errors="replace").count("nats: reconnected")

    def disconnects(self) -> int:
        """How often the service lost its NATS connection after it said "ready" (a slow
        consumer, typically: the server drops a client that does not read fast enough)."""
        return self.disconnect_lines() - self.disconnects_at_ready

    async def metrics(self) -> Samples:
        return await scrape(self.http_url)

    async def relayed(self, position: int, within: float = 600) -> float:
        """Wait until the relay has published records up to `position` to the LEDGER stream (a
        service started on a ledger it has not relayed yet publishes it all first: work that
        would otherwise fall into whatever is measured next); the seconds it took."""
        started = now()
        while value(await self.metrics(), "ledger_relay_position") < position:
            self.check()
            if now() - started > within:
                raise RuntimeError(f"the relay did not reach position {position} within {within:.0f} s")
            await asyncio.sleep(0.2)
        return now() - started

    async def ingest_counts(self, messages: int = 0, within: float = 10) -> tuple[float, float]:
        """(batches, messages) ingest has acknowledged, from /metrics; with `messages`, waited
        for until that many are (the last batch's ack may follow the head it made)."""
        deadline = now() + within
        while True:
            samples = await self.metrics()
            counts = (
                value(samples, "ledger_ingest_batches_total"),
                value(samples, "ledger_ingest_messages_total"),
            )
            if counts[1] >= messages or now() > deadline:
                return counts
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_service(service: Service) -> AsyncIterator[Service]:
    """A started, ready service; on the way out stopped, and its log's tail shown if it failed."""
    try:
        await service.start()
        await service.wait_ready()
        yield service
    except BaseException:
        say(f"  the phase failed; the last lines of the service's log:\n{service.tail()}")
        raise
    finally:
        code = await service.stop()
        if code not in (0, None):
            say(f"  warning: connledger serve exited {code}; log {service.log}:\n{service.tail()}")


def add_service_arguments(parser: argparse.ArgumentParser, profile: bool = True) -> None:
    """--service-setting (repeatable) and, with `profile`, --profile-dir: what a benchmark that
    starts services takes to compare configurations and to record them."""
    if profile:
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


def parse_service_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """parser.parse_args(), with each --service-setting checked and --profile-dir made."""
    args = parser.parse_args()
    for setting in args.service_setting:
        if not setting.startswith("LEDGER_") or "=" not in setting:
            parser.error(f"--service-setting {setting!r}: write it as LEDGER_NAME=VALUE")
    if getattr(args, "profile_dir", None) is not None:
        args.profile_dir = args.profile_dir.resolve()
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    return args


def service_settings(args: argparse.Namespace) -> dict[str, str]:
    """--service-setting as the settings to start a service with."""
    return dict(setting.split("=", 1) for setting in args.service_setting)
