"""The service under failure, with a real nats-server and real processes:
SIGKILL in the middle of an ingest, a database outage, three instances sharing the consumer,
and every rejection code arriving over NATS."""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
from pathlib import Path

import httpx
import nats
import orjson
import pytest
from sqlalchemy.engine import URL, make_url

from service.events import Event, decode
from service.simulation.traffic import generate
from tests.e2e.conftest import Service
from tests.e2e.natsutil import (
    ask,
    check_counts_follow_the_ledger,
    final_live_sets,
    ledger_stream,
    publish_all,
    replay,
    wait_for_head,
)
from tests.e2e.proxy import OutageProxy


def events_of(lines: list[bytes]) -> list[Event]:
    return [e for e in (decode(line) for line in lines) if isinstance(e, Event)]


async def check_exactly_once(nc: nats.NATS, events: list[Event]) -> None:
    """The ledger holds each event once, counts equal the final two-phase set, every record's
    count follows the ledger's own order, and LEDGER holds every position."""
    unique = {e.id: e for e in events}
    head = await wait_for_head(nc, len(unique), timeout=240)
    assert head == len(unique)
    records, last = await replay(nc, {})
    assert last == str(len(unique))
    assert [r["position"] for r in records] == list(range(1, len(unique) + 1))
    assert sorted(r["id"] for r in records) == sorted(unique)
    for record in records:
        event = unique[record["id"]]
        assert (record["sessionId"], record["connection"]["connectionId"]) == (
            event.session_id,
            event.connection_id,
        )
    check_counts_follow_the_ledger(records)
    expected = final_live_sets(events)
    for session in list(expected)[:50]:
        answer = await ask(nc, f"ledger.sessions.{session}.connections")
        assert {c["connectionId"] for c in answer["connections"]} == expected[session]
    published = await ledger_stream(nc, len(unique))
    # A record republished across a crash carries its event id as Nats-Msg-Id, and JetStream
    # keeps one copy: LEDGER holds every record once, in position order, whatever happened.
    assert [r["position"] for r in published] == list(range(1, len(unique) + 1))
    by_position = {r["position"]: r for r in records}
    assert all(r == by_position[r["position"]] for r in published)


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_sigkill_in_the_middle_of_an_ingest_loses_and_duplicates_nothing(
    service_factory: type[Service], nats_url: str
) -> None:
    lines = list(generate(50_000, seed=21, sessions=300))
    events = events_of(lines)
    # Batches far smaller than the default, so that the kill lands with the ingest under way
    # however fast this machine is at the moment.
    # What the killed instance held unacknowledged comes again after the ack wait.
    first = service_factory(LEDGER_BATCH_SIZE="1000", LEDGER_INGEST_ACK_WAIT="10")  # it creates the stream
    nc = await nats.connect(nats_url)
    try:
        await publish_all(nc, lines)
        reached = await wait_for_head(nc, 8_000, timeout=120)
        assert reached >= 8_000
        first.stop(signal.SIGKILL)
        assert reached < len({e.id for e in events}), "the ingest finished before the kill"
        service_factory(LEDGER_INGEST_ACK_WAIT="10")
        await check_exactly_once(nc, events)
    finally:
        await nc.close()


def _proxy_in_front_of(url: URL) -> OutageProxy:
    socket_folder = url.query.get("host")
    if isinstance(socket_folder, str) and socket_folder.startswith("/"):
        # A Unix socket (the embedded server): <folder>/.s.PGSQL.<port>
        return OutageProxy("", 0, unix_socket=f"{socket_folder}/.s.PGSQL.{url.port or 5432}")
    return OutageProxy(url.host or "127.0.0.1", url.port or 5432)


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_a_database_outage_loses_nothing_and_ingest_resumes_by_itself(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    parsed = make_url(database_url)
    if parsed.get_backend_name() != "postgresql":
        pytest.skip("an outage is played with a TCP proxy in front of PostgreSQL")
    proxy = _proxy_in_front_of(parsed)
    port = proxy.start()
    # The service reaches the proxy over TCP, whatever the proxy reaches the server by.
    query = {k: v for k, v in parsed.query.items() if k != "host"}
    through_proxy = parsed.set(host="127.0.0.1", port=port, query=query).render_as_string(hide_password=False)
    lines = list(generate(20_000, seed=22, sessions=100))
    events = events_of(lines)
    service = Service(
        {"LEDGER_DATABASE_URL": through_proxy, "LEDGER_NATS_URL": nats_url, "LEDGER_HOOKS": ""}, tmp_path
    )
    nc = await nats.connect(nats_url)
    try:
        await publish_all(nc, lines[:10_000])
        assert await wait_for_head(nc, 2_000, timeout=60) >= 2_000
        proxy.cut()
        await publish_all(nc, lines[10_000:])
        await asyncio.sleep(4)
        assert service.process.poll() is None, "the service must ride out the outage"
        proxy.restore()
        await check_exactly_once(nc, events)
        assert service.process.poll() is None
        async with httpx.AsyncClient(timeout=10) as client:
            metrics = (await client.get(f"{service.http_url}/metrics")).text
        retried = next(
            line for line in metrics.splitlines() if line.startswith("ledger_transient_failures_total")
        )
        assert float(retried.split()[1]) > 0, "the outage's retries are counted"
    finally:
        await nc.close()
        service.stop()
        proxy.close()
    assert "ledger unavailable" in service.log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_three_instances_make_the_ledger_one_would(
    service_factory: type[Service], nats_url: str, database_url: str
) -> None:
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("scale-out shares one PostgreSQL")
    lines = list(generate(20_000, seed=23, sessions=150))
    events = events_of(lines)
    # What the killed instance held unacknowledged comes again after the ack wait.
    services = [service_factory(LEDGER_BATCH_SIZE="200", LEDGER_INGEST_ACK_WAIT="10") for _ in range(3)]
    nc = await nats.connect(nats_url)
    try:
        await publish_all(nc, lines[:10_000])
        await publish_all(nc, lines[:2_000])  # retries, spread over the instances
        assert await wait_for_head(nc, 3_000, timeout=60) >= 3_000
        # The relay leader dies: another instance takes the lease over from the checkpoint.
        leader = next(s for s in services if "relay lease held" in s.log.read_text())
        leader.stop(signal.SIGKILL)
        await publish_all(nc, lines[10_000:])
        await check_exactly_once(nc, events)
    finally:
        await nc.close()
    survivors = [s for s in services if s is not leader]
    assert [s.stop() for s in survivors] == [0, 0]
    assert any("relay lease held" in s.log.read_text() for s in survivors)
    # Each survivor took part in the ingest.
    for service in survivors:
        log = service.log.read_text()
        assert "ingest stopped after" in log
        assert "after 0 batches" not in log


@pytest.mark.timeout(120)
async def test_every_rejection_code_arrives_over_nats_and_is_kept_whole(
    service_factory: type[Service], nats_url: str, database_url: str, tmp_path: Path
) -> None:
    service_factory()
    good = {
        "id": "g1",
        "type": "connectionCreated",
        "sessionId": "s1",
        "timestamp": 1,
        "connection": {"connectionId": "c", "creationTime": 1},
    }
    cases = [
        ("connections.s1.connectionCreated", b"{nope", "malformed_json"),
        ("connections.s1.connectionCreated", orjson.dumps({**good, "id": "has space"}), "invalid_field"),
        ("connections.s1.connectionMoved", orjson.dumps({**good, "type": "connectionMoved"}), "unknown_type"),
        ("connections.s1.connectionCreated", b'{"pad": "' + b"x" * 70_000 + b'"}', "too_large"),
        ("connections.s2.connectionCreated", orjson.dumps(good), "subject_mismatch"),
    ]
    nc = await nats.connect(nats_url)
    try:
        watcher = await nc.subscribe("ledger.rejected.>")
        await publish_all(nc, [orjson.dumps(good)])
        assert await wait_for_head(nc, 1, timeout=30) == 1
        js = nc.jetstream()
        for subject, raw, _ in cases:
            await js.publish(subject, raw)
        await js.publish("connections.s1.connectionCreated", orjson.dumps({**good, "timestamp": 2}))
        expected = [code for *_, code in cases] + ["conflict"]
        seen = [await watcher.next_msg(timeout=15) for _ in expected]
        assert [m.subject for m in seen] == [f"ledger.rejected.{code}" for code in expected]
        assert [m.data for m in seen[:-1]] == [raw for _, raw, _ in cases]
        assert all(m.headers and m.headers["Ledger-Reject-Message"] for m in seen)
        # A message as large as the server takes: kept whole, told of with its body cut to fit
        # beside the headers, and acknowledged (the next event is appended after it).
        huge = b'{"pad": "' + b"y" * (nc.max_payload - 64) + b'"}'
        await js.publish("connections.s1.connectionCreated", huge)
        notice = await watcher.next_msg(timeout=15)
        assert notice.subject == "ledger.rejected.too_large"
        assert notice.headers is not None
        assert notice.headers["Ledger-Raw-Truncated"] == str(len(huge))
        assert huge.startswith(notice.data)
        assert len(notice.data) > len(huge) // 2
        await js.publish("connections.s1.connectionCreated", orjson.dumps({**good, "id": "g2"}))
        assert await wait_for_head(nc, 2, timeout=30) == 2
        expected.append("too_large")
    finally:
        await nc.close()
    listing = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "connledger"),
        "rejected",
        env={"LEDGER_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    output, _ = await listing.communicate()
    assert listing.returncode == 0
    stored = [orjson.loads(line) for line in output.splitlines()]
    assert [s["code"] for s in stored] == expected
    assert [base64.b64decode(s["raw"]) for s in stored[: len(cases)]] == [raw for _, raw, _ in cases]
    assert [s["subject"] for s in stored[: len(cases)]] == [subject for subject, _, _ in cases]
    assert base64.b64decode(stored[-1]["raw"]) == huge


@pytest.mark.timeout(300)
async def test_sigterm_drains_and_the_next_start_loses_nothing(
    service_factory: type[Service], nats_url: str
) -> None:
    lines = list(generate(15_000, seed=24, sessions=80))
    events = events_of(lines)
    # Small batches: the stop comes while batches are in hand, which is what it must drain.
    first = service_factory(LEDGER_BATCH_SIZE="1000")
    nc = await nats.connect(nats_url)
    try:
        await publish_all(nc, lines)
        assert await wait_for_head(nc, 2_000, timeout=60) >= 2_000
        started = asyncio.get_running_loop().time()
        assert first.stop(signal.SIGTERM) == 0
        assert asyncio.get_running_loop().time() - started < 15, "drain took too long"
        assert "ingest stopped after" in first.log.read_text()
        service_factory()
        await check_exactly_once(nc, events)
    finally:
        await nc.close()
