"""The service on a real nats-server, on SQLite and PostgreSQL: events published with plain
nats-py land once, counts answer over NATS, LEDGER holds every record in position order, replay
returns the history, rejections are published and kept, and SIGTERM drains to exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client

from service.events import Event, decode
from service.simulation.traffic import generate
from tests.e2e.conftest import Service
from tests.e2e.natsutil import ask, final_live_sets, publish_all, replay

ROOT = Path(__file__).resolve().parents[2]


async def wait_until_head(nc: Client, session: str, position: int) -> dict[str, Any]:
    return await ask(nc, f"ledger.sessions.{session}.count", {"minPosition": position})


@pytest.mark.timeout(180)
async def test_events_land_once_and_everything_answers(service_factory: type[Service], nats_url: str) -> None:
    service = service_factory()
    lines = list(generate(3000, seed=11, sessions=20))
    events = [e for e in (decode(line) for line in lines) if isinstance(e, Event)]
    expected = final_live_sets(events)
    unique = len({e.id for e in events})

    nc = await nats.connect(nats_url)
    try:
        await publish_all(nc, lines)
        await publish_all(nc, lines[:500])  # a producer's retries: all duplicates
        rejected = await nc.subscribe("ledger.rejected.>")
        await nc.publish("connections.s1.connectionCreated", b"{oops")
        await nc.publish(
            "connections.s1.connectionCreated",
            orjson.dumps(
                {
                    "id": "mismatch",
                    "type": "connectionCreated",
                    "sessionId": "s2",
                    "timestamp": 1,
                    "connection": {"connectionId": "c", "creationTime": 1},
                }
            ),
        )

        session = events[0].session_id
        answer = await wait_until_head(nc, session, unique)
        assert answer["position"] == unique
        assert answer["count"] == len(expected[session])
        for sid in {e.session_id for e in events}:
            listing = await ask(nc, f"ledger.sessions.{sid}.connections")
            assert listing["count"] == len(expected[sid])
            assert {c["connectionId"] for c in listing["connections"]} == expected[sid]

        first = await rejected.next_msg(timeout=10)
        second = await rejected.next_msg(timeout=10)
        codes = {first.subject, second.subject}
        assert codes == {"ledger.rejected.malformed_json", "ledger.rejected.subject_mismatch"}
        malformed = first if first.subject.endswith("malformed_json") else second
        assert malformed.data == b"{oops"
        assert malformed.headers is not None
        assert malformed.headers["Ledger-Reject-Code"] == "malformed_json"
        assert malformed.headers["Ledger-Subject"] == "connections.s1.connectionCreated"

        records, last = await replay(nc, {})
        assert [r["position"] for r in records] == list(range(1, unique + 1))
        assert last == str(unique)
        assert sorted(r["id"] for r in records) == sorted({e.id for e in events})
        tail, last = await replay(nc, {"after": unique - 5, "sessionId": session})
        assert all(r["sessionId"] == session and r["position"] > unique - 5 for r in tail)
        nothing, last = await replay(nc, {"after": unique})
        assert nothing == []
        assert last == str(unique)

        # LEDGER: every record, in position order, with its event id as Nats-Msg-Id.
        js = nc.jetstream()
        for _ in range(100):
            if (await js.stream_info("LEDGER")).state.messages >= unique:
                break
            await asyncio.sleep(0.1)
        consumer = await js.pull_subscribe("ledger.records.>", stream="LEDGER")
        published: list[dict[str, Any]] = []
        while len(published) < unique:
            for message in await consumer.fetch(500, timeout=5):
                published.append(orjson.loads(message.data))
                assert message.headers is not None
                assert message.headers["Nats-Msg-Id"] == published[-1]["id"]
                # Chained batches (chained_publisher.py): each names the record before it.
                if (before := message.headers.get("Nats-Expected-Last-Msg-Id")) is not None:
                    assert before == published[-2]["id"]
                assert (
                    message.subject == f"ledger.records.{published[-1]['sessionId']}.{published[-1]['type']}"
                )
                await message.ack()
        assert [r["position"] for r in published] == list(range(1, unique + 1))
        assert published == records
    finally:
        await nc.close()
    assert service.stop(signal.SIGTERM) == 0


@pytest.mark.timeout(120)
async def test_bad_requests_get_an_error_naming_the_field(
    service_factory: type[Service], nats_url: str
) -> None:
    service_factory()
    nc = await nats.connect(nats_url)
    try:
        assert (await ask(nc, "ledger.sessions.nobody.count")) == {
            "sessionId": "nobody",
            "count": 0,
            "position": 0,
        }
        error = await ask(nc, "ledger.sessions.s1.count", {"minPosition": -1})
        assert error["error"] == "invalid_field"
        assert error["field"] == "minPosition"
        reply = await nc.request("ledger.sessions.s1.connections", b"[1]", timeout=5)
        assert orjson.loads(reply.data)["error"] == "invalid_field"
        # A refused replay is still closed by the end marker: a client reading until it stops.
        inbox = nc.new_inbox()
        answers = await nc.subscribe(inbox)
        await nc.publish("ledger.replay", orjson.dumps({"after": 3, "limit": "ten"}), reply=inbox)
        refused = await answers.next_msg(timeout=5)
        assert orjson.loads(refused.data)["field"] == "limit"
        end = await answers.next_msg(timeout=5)
        assert end.data == b""
        # (FastStream adds its own headers, correlation_id and content-type, beside ours.)
        ours = {k: v for k, v in (end.headers or {}).items() if k.startswith("Ledger-")}
        assert ours == {"Ledger-Replay-End": "3", "Ledger-Replay-Error": "invalid_field"}
    finally:
        await nc.close()


# CONTRACT 2 deduplicates (step 2) before the hooks (step 3): a redelivered event's hooks do not
# run again. Under a backlog, ingest decodes the next batch while the one before commits; with
# hooks that would run them for a copy of an event the batch in flight is appending.
@pytest.mark.timeout(180)
async def test_under_a_backlog_the_hooks_run_once_for_an_event_delivered_twice(
    service_factory: type[Service], nats_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "hooked.txt"
    service = service_factory(
        LEDGER_HOOKS="tests.e2e.cli_hooks:record",
        LEDGER_BATCH_SIZE="40",
        CONNLEDGER_TEST_HOOK_LOG=str(log),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    lines = list(generate(1500, seed=5, sessions=10))
    ids = {e.id for e in (decode(line) for line in lines) if isinstance(e, Event)}
    nc = await nats.connect(nats_url)
    try:
        # Every message twice in a row (a producer's retry): copies fall on both sides of many
        # batch boundaries, and the publisher outruns ingest, so there is a backlog.
        await publish_all(nc, [line for line in lines for _ in range(2)])
        await wait_until_head(nc, "x", len(ids))
    finally:
        await nc.close()
    assert service.stop() == 0
    hooked = log.read_text().split()
    assert sorted(hooked) == sorted(ids), "each event's hooks ran once"


# CONTRACT 1: a producer's headers never change what happens to its event, even those named as
# the pull protocol's status messages. Each event here carries such a header; with the feed
# taking them for status messages, none would be appended or acknowledged, and they would be
# redelivered until they filled max_ack_pending and stopped ingest for everyone.
@pytest.mark.timeout(120)
async def test_a_producers_status_headers_never_swallow_its_event(
    service_factory: type[Service], nats_url: str
) -> None:
    service = service_factory()
    statuses = ["100", "408", "409", "404", "503"]
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for n, status in enumerate(statuses * 4):
            description = "Idle Heartbeat" if status == "100" else "No Messages"
            headers = {"Status": status, "Description": description}
            body = {
                "id": f"hdr-{n}",
                "type": "connectionCreated",
                "sessionId": "headers",
                "timestamp": 1_732_700_000_000 + n,
                "connection": {"connectionId": f"c{n}", "creationTime": 1_732_700_000_000},
            }
            await js.publish("connections.headers.connectionCreated", orjson.dumps(body), headers=headers)
        # An event with no header of its own, after them: the pull is not cut off by them.
        after = {
            "id": "after",
            "type": "connectionCreated",
            "sessionId": "plain",
            "timestamp": 1_732_700_000_000,
            "connection": {"connectionId": "c", "creationTime": 1_732_700_000_000},
        }
        await js.publish("connections.plain.connectionCreated", orjson.dumps(after))
        total = len(statuses) * 4 + 1
        answer = await wait_until_head(nc, "headers", total)
        assert answer == {"sessionId": "headers", "count": len(statuses) * 4, "position": total}
        assert (await ask(nc, "ledger.sessions.plain.count"))["count"] == 1
        records, _ = await replay(nc, {})
        assert sorted(r["id"] for r in records) == sorted([f"hdr-{n}" for n in range(total - 1)] + ["after"])
        info = await js.consumer_info("CONNECTIONS", "connection-ledger")
        for _ in range(50):  # acks are applied a moment after they arrive
            if not info.num_ack_pending and not info.num_pending:
                break
            await asyncio.sleep(0.1)
            info = await js.consumer_info("CONNECTIONS", "connection-ledger")
        assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    finally:
        await nc.close()
    assert service.stop() == 0
