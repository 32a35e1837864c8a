"""End-to-end fixtures: a real nats-server on a free port, and the service as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The nats-server starter and port helpers are the benchmarks' (bench/harness); tests written
# before that take them from here.
from bench.harness.nats_server import (
    free_port,
    jetstream_arguments,
    running_nats_server,
    start_nats_server,
    stop_process,
    wait_for_port,
)

__all__ = ["NatsProcess", "Service", "free_port", "running_nats_server", "wait_for_port"]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with running_nats_server(*jetstream_arguments(tmp_path, port), port=port) as url:
        yield url


class NatsProcess:
    """A JetStream nats-server of a test's own, that it may stop, kill, and start again on the
    same port and store (a node that died and came back)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process = start_nats_server(*jetstream_arguments(folder, self.port), port=self.port)

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def start(self) -> None:
        self.process = start_nats_server(*jetstream_arguments(self.folder, self.port), port=self.port)


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsProcess]:
    server = NatsProcess(tmp_path)
    try:
        yield server
    finally:
        server.stop()


class Service:
    """`connledger serve` as a child process."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.log = cwd / f"serve-{time.monotonic_ns()}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "connledger"), "serve"],
            # An ephemeral HTTP port unless the test asks for one: tests run side by side.
            env={**os.environ, "LEDGER_HTTP_PORT": "0", **env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
        )
        assert self.process.stdout is not None
        self.banner: list[str] = []
        while not (self.banner and self.banner[-1].startswith("ready")):
            line = self.process.stdout.readline().decode()
            assert line, f"serve did not start:\n{self.log.read_text()}"
            self.banner.append(line)
        self.http_url = next(b.split()[1] for b in self.banner if b.startswith("HTTP"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log_file.close()


@pytest.fixture
def service_factory(database_url: str, nats_url: str, tmp_path: Path) -> Iterator[type[Service]]:
    started: list[Service] = []
    base = {"LEDGER_DATABASE_URL": database_url, "LEDGER_NATS_URL": nats_url, "LEDGER_HOOKS": ""}

    class Bound(Service):
        def __init__(self, **extra: str) -> None:
            super().__init__({**base, **extra}, tmp_path)
            started.append(self)

    yield Bound
    for service in started:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait(10)
        service.close()
