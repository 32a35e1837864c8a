"""The service when its NATS server goes away: HTTP writes are refused at once with 503 (nothing
of them accepted), and SIGTERM still drains and exits 0, also when the server got the same
signal in the middle of an ingest. A server that is not there at all is a clear error at start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import pytest

from bench.harness.nats_server import free_port
from service.simulation.traffic import generate
from tests.e2e.conftest import NatsProcess, Service
from tests.e2e.natsutil import publish_all, wait_for_head
from tests.helpers import body


def _service(database_url: str, server: NatsProcess, tmp_path: Path, **extra: str) -> Service:
    env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_NATS_URL": server.url, "LEDGER_HOOKS": "", **extra}
    return Service(env, tmp_path)


@pytest.mark.timeout(120)
async def test_http_writes_get_503_at_once_while_nats_is_gone(
    database_url: str, own_nats: NatsProcess, tmp_path: Path
) -> None:
    service = _service(database_url, own_nats, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=service.http_url, timeout=10) as client:
            accepted = await client.post("/v1/events", json=body("before", session="s1"))
            assert accepted.status_code == 202
            own_nats.stop()
            # Once the service has noticed (its readiness says so) ...
            deadline = time.monotonic() + 10
            while (ready := await client.get("/readyz")).json()["checks"]["nats"]:
                assert time.monotonic() < deadline, "the service never noticed NATS was gone"
                await asyncio.sleep(0.05)
            assert ready.status_code == 503
            # ... a write is refused at once, not after waiting out an acknowledgement.
            started = time.monotonic()
            refused = await client.post("/v1/events", json=body("during", session="s1", connection="c2"))
            assert refused.status_code == 503
            assert refused.json()["error"] == "unavailable"
            assert time.monotonic() - started < 2, "the sender is told at once, not after a timeout"
    finally:
        started = time.monotonic()
        assert service.stop(signal.SIGTERM) == 0, service.log.read_text()
        assert time.monotonic() - started < 15, "a stop with NATS gone waits out no long timeout"


@pytest.mark.timeout(180)
async def test_sigterm_to_the_service_and_its_nats_server_together_exits_0(
    database_url: str, own_nats: NatsProcess, tmp_path: Path
) -> None:
    # Small batches, so that the signal finds batches in hand, committing and relaying.
    service = _service(database_url, own_nats, tmp_path, LEDGER_BATCH_SIZE="500")
    lines = list(generate(20_000, seed=3, sessions=50))
    nc = await nats.connect(own_nats.url)
    try:
        await publish_all(nc, lines)
        assert await wait_for_head(nc, 1_000, timeout=60) >= 1_000
    finally:
        await nc.close()
    # As a process manager stopping a group would: both at once.
    own_nats.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert service.stop(signal.SIGTERM) == 0, service.log.read_text()
    assert time.monotonic() - started < 20, "drain took too long with NATS gone"


def test_a_nats_server_that_is_not_there_is_a_clear_error_at_once(database_url: str, tmp_path: Path) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "connledger"), "serve"],
        env={**os.environ, "LEDGER_NATS_URL": nowhere, "LEDGER_DATABASE_URL": database_url},
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    stderr = result.stderr.decode()
    assert f"LEDGER_NATS_URL: cannot connect to {nowhere}" in stderr
    assert "Connection refused" in stderr
    assert "Traceback" not in stderr
    assert time.monotonic() - started < 20, "no endless retrying of the first connect"
