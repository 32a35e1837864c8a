"""Where the relay runs (LEDGER_RELAY_MODE), on a real nats-server and both databases:

- by default in a child process of `serve`, which relays every record and goes away with its
  parent, even when the parent is killed (no orphan holding the lease);
- off in `serve`, with `connledger relay` run on its own beside it;
- every commit announced on `ledger.head`, which is what wakes a relay in another process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import nats
import orjson
import pytest
from nats.aio.msg import Msg

from service.events import Event, decode
from service.simulation.traffic import generate
from tests.e2e.conftest import Service
from tests.e2e.natsutil import ledger_stream, publish_all, wait_for_head


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found.extend(int(child) for child in children)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.timeout(180)
async def test_the_relay_runs_in_a_child_that_goes_away_with_its_parent(
    service_factory: type[Service], nats_url: str
) -> None:
    service = service_factory()
    relays = [pid for pid in _children(service.process.pid) if "service relay" in _cmdline(pid)]
    assert len(relays) == 1, "serve starts one relay process"
    lines = list(generate(1500, seed=3, sessions=10))
    nc = await nats.connect(nats_url)
    try:
        await publish_all(nc, lines)
        unique = len({e.id for e in (decode(line) for line in lines) if isinstance(e, Event)})
        assert await wait_for_head(nc, unique) == unique
        records = await ledger_stream(nc, unique)
        assert [r["position"] for r in records] == list(range(1, unique + 1))
    finally:
        await nc.close()
    service.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _alive(relays[0]) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not _alive(relays[0]), "the relay process outlived its parent"


@pytest.mark.timeout(180)
async def test_relay_off_in_serve_and_run_on_its_own(
    service_factory: type[Service], nats_url: str, database_url: str, tmp_path: Path
) -> None:
    service = service_factory(LEDGER_RELAY_MODE="off")
    assert not [pid for pid in _children(service.process.pid) if "service relay" in _cmdline(pid)]
    lines = list(generate(800, seed=4, sessions=8))
    nc = await nats.connect(nats_url)
    relay = None
    try:
        heads: list[int] = []

        async def heard(message: Msg) -> None:
            heads.append(orjson.loads(message.data)["position"])

        await nc.subscribe("ledger.head", cb=heard)
        await publish_all(nc, lines)
        unique = len({e.id for e in (decode(line) for line in lines) if isinstance(e, Event)})
        head = await wait_for_head(nc, unique)
        assert head == unique
        await asyncio.sleep(0.5)
        assert heads, "each commit is announced"
        assert heads == sorted(heads)
        assert heads[-1] == head
        assert (await nc.jetstream().stream_info("LEDGER")).state.messages == 0, "nobody relays yet"

        env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_NATS_URL": nats_url}
        relay = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "connledger"),
            "relay",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert relay.stdout is not None
        assert (await asyncio.wait_for(relay.stdout.readline(), 30)).startswith(b"ready")
        records = await ledger_stream(nc, head)
        assert [r["position"] for r in records] == list(range(1, head + 1))
        relay.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(relay.wait(), 30) == 0
    finally:
        if relay is not None and relay.returncode is None:
            relay.kill()
            await relay.wait()
        await nc.close()
    assert service.stop() == 0
