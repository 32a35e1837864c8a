"""Each event's hooks run once, whichever process sees it (CONTRACT 2, 5): two `serve`
instances sharing the consumer, and `serve` beside `connledger import` of the same events,
with copies of every event arriving at both at once. Real processes, a real nats-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from sqlalchemy.engine import make_url

from service.events import Event, decode
from service.simulation.traffic import generate
from tests.e2e.conftest import Service
from tests.e2e.natsutil import publish_all, wait_for_head

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _hooked(log: Path) -> dict[str, str]:
    return {
        "LEDGER_HOOKS": "tests.e2e.cli_hooks:record",
        "CONNLEDGER_TEST_HOOK_LOG": str(log),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def _ids(lines: list[bytes]) -> set[str]:
    return {e.id for e in (decode(line) for line in lines) if isinstance(e, Event)}


@pytest.mark.timeout(240)
async def test_two_instances_run_each_events_hooks_once(
    service_factory: type[Service], nats_url: str, database_url: str, tmp_path: Path
) -> None:
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("instances share one PostgreSQL")
    log = tmp_path / "hooked.txt"
    services = [service_factory(LEDGER_BATCH_SIZE="40", **_hooked(log)) for _ in range(2)]
    lines = list(generate(3000, seed=9, sessions=20))
    ids = _ids(lines)
    nc = await nats.connect(nats_url)
    try:
        # Every message twice in a row (a producer's retry): the copies go to either instance,
        # often to both at the same moment.
        await publish_all(nc, [line for line in lines for _ in range(2)])
        assert await wait_for_head(nc, len(ids), timeout=120) == len(ids)
    finally:
        await nc.close()
    assert [service.stop() for service in services] == [0, 0]
    hooked = log.read_text().split()
    assert sorted(hooked) == sorted(ids), "each event's hooks ran once"


@pytest.mark.timeout(240)
async def test_serve_and_an_import_of_the_same_events_run_each_events_hooks_once(
    service_factory: type[Service], nats_url: str, database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "hooked.txt"
    service = service_factory(LEDGER_BATCH_SIZE="40", **_hooked(log))
    lines = list(generate(3000, seed=10, sessions=20))
    ids = _ids(lines)
    source = tmp_path / "events.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, **_hooked(log)}
    nc = await nats.connect(nats_url)
    try:
        importing = asyncio.to_thread(
            subprocess.run,
            [str(Path(sys.executable).parent / "connledger"), "import", "--batch-size", "50", str(source)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=180,
        )
        done, _ = await asyncio.gather(importing, publish_all(nc, lines))
        assert done.returncode == 0, done.stderr.decode()
        assert await wait_for_head(nc, len(ids), timeout=120) == len(ids)
    finally:
        await nc.close()
    assert service.stop() == 0
    hooked = log.read_text().split()
    assert sorted(hooked) == sorted(ids), "each event's hooks ran once"
