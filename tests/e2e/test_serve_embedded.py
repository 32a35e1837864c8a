"""`connledger serve` with no configuration at all, as a newcomer runs it: the SQLite ledger and
the bundled nats-server under ./var/, and ./var/nats.url written once events can be published."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import nats
import orjson
import pytest

from tests.e2e.natsutil import ask
from tests.helpers import body

CONNLEDGER = Path(sys.executable).parent / "connledger"
STALE_URL = "nats://127.0.0.1:1"


def _wait_for_url(url_file: Path, process: subprocess.Popen[bytes], log: Path, within: float) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited early:\n{log.read_text()}"
        if url_file.exists() and (text := url_file.read_text()) != STALE_URL:
            return text
        time.sleep(0.05)
    raise AssertionError(f"no {url_file} after {within} s:\n{log.read_text()}")


def _serve_unconfigured(cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_HTTP_PORT"] = "0"  # tests run beside other services; every other setting defaulted
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [str(CONNLEDGER), "serve"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )


def _accepts(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.timeout(120)
async def test_serve_with_no_settings_takes_events_as_soon_as_it_names_its_nats(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    # Left by an earlier run whose server is gone: never to be read as this run's.
    (var / "nats.url").write_text(STALE_URL)
    log = tmp_path / "serve.log"
    process = _serve_unconfigured(tmp_path, log)
    try:
        url = _wait_for_url(var / "nats.url", process, log, within=60)
        assert url.startswith("nats://127.0.0.1:"), url
        assert (var / "ledger.db").exists()
        assert (var / "nats").is_dir()

        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            # At once, no retry: the stream exists by the time the file does.
            for n in range(10):
                document = body(f"e{n}", session="s1", connection=f"c{n}")
                ack = await js.publish("connections.s1.connectionCreated", orjson.dumps(document))
                assert ack.stream == "CONNECTIONS"
            # A plain core NATS publish lands in the stream too.
            await nc.publish(
                "connections.s1.connectionDestroyed",
                orjson.dumps(body("gone", "connectionDestroyed", "s1", "c0")),
            )
            answer = await ask(nc, "ledger.sessions.s1.count", {"minPosition": 11})
            assert answer == {"sessionId": "s1", "count": 9, "position": 11}
        finally:
            await nc.close()

        process.send_signal(signal.SIGTERM)
        assert process.wait(40) == 0, log.read_text()
        # The server the file named is stopped with the service, and the file goes with it.
        assert not (var / "nats.url").exists()
        assert not _accepts(url)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
