"""Readers who never read, against the real service: twenty clients ask for the whole history
(NDJSON and SSE over HTTP, `ledger.replay` over NATS) and then read nothing, while 50,000 events
are ingested. Ingest goes on at its usual pace, the service stays up, and each reader is either
served or refused with a clear answer (CONTRACT 15)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from service.events import Event, decode
from service.simulation.traffic import generate
from tests.e2e.conftest import Service
from tests.e2e.natsutil import ask, final_live_sets, publish_all, wait_for_head
from tests.helpers import stalled_http_reader

pytestmark = pytest.mark.slow

HISTORY = 60_000
INGESTED = 50_000
CAP = 12


def _stalled_nats(url: str, n: int) -> socket.socket:
    """A NATS client speaking the protocol by hand, so that it can ask for a replay and then
    truly read nothing (a library client reads its socket whatever the application does)."""
    host, port = url.removeprefix("nats://").split(":")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect((host, int(port)))
    client.recv(4096)  # INFO
    inbox = f"_INBOX.stalled{n}"
    client.sendall(
        b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
        + f"SUB {inbox} 1\r\nPUB ledger.replay {inbox} 2\r\n{{}}\r\nPING\r\n".encode()
    )
    return client


def _status_of(client: socket.socket) -> int:
    client.settimeout(10)
    head = client.recv(64).decode("latin-1")
    assert head.startswith("HTTP/1.1 "), head
    return int(head.split()[1])


@pytest.mark.timeout(300)
async def test_twenty_stalled_readers_hold_back_no_event(
    service_factory: type[Service], database_url: str, nats_url: str, tmp_path: Path
) -> None:
    history = list(generate(HISTORY, seed=3, sessions=200))
    source = tmp_path / "history.ndjson"
    source.write_bytes(b"\n".join(history) + b"\n")
    imported = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "connledger"), "import", str(source)],
        env={**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_HOOKS": ""},
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr.decode()
    events = [e for e in (decode(line) for line in history) if isinstance(e, Event)]
    recorded = len({e.id for e in events})

    service = service_factory(LEDGER_MAX_STREAMING_READERS=str(CAP))
    http = service.http_url
    stalled_http = [stalled_http_reader(http, "/v1/events") for _ in range(6)]
    stalled_http += [
        stalled_http_reader(http, f"/v1/sessions/{events[n].session_id}/stream") for n in range(4)
    ]
    stalled_nats = [_stalled_nats(nats_url, n) for n in range(10)]
    try:
        fresh = list(generate(INGESTED, seed=4, sessions=300))
        fresh_events = [e for e in (decode(line) for line in fresh) if isinstance(e, Event)]
        nc = await nats.connect(nats_url)
        try:
            started = time.monotonic()
            await publish_all(nc, fresh)
            total = recorded + len({e.id for e in fresh_events})
            assert await wait_for_head(nc, total, timeout=120) == total
            took = time.monotonic() - started
            assert service.process.poll() is None, "the service is up"
            # The usual time: well under a minute on this kind of machine (some 2-4 s alone).
            assert took < 60, f"50,000 events took {took:.1f} s beside stalled readers"
            expected = final_live_sets(events + fresh_events)
            for session in list(expected)[:20]:
                answer = await ask(nc, f"ledger.sessions.{session}.count")
                assert answer["count"] == len(expected[session]), session
        finally:
            await nc.close()
        statuses = [_status_of(client) for client in stalled_http]
        assert set(statuses) <= {200, 503}, statuses
        # Ten HTTP readers stalled at once, under a cap of twelve shared with NATS replays.
        assert statuses.count(200) >= CAP - len(stalled_nats), statuses
    finally:
        for client in stalled_http + stalled_nats:
            client.close()
    await asyncio.sleep(0)
    assert service.stop() == 0
