"""Helpers for the end-to-end tests that talk to the service over NATS."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

# Requests and replay as the benchmarks send them; the tests take them from here.
from bench.harness.clients import ask, replay
from service.events import Event

__all__ = [
    "ask",
    "check_counts_follow_the_ledger",
    "final_live_sets",
    "ledger_stream",
    "publish_all",
    "replay",
    "wait_for_head",
]


async def publish_all(nc: Client, lines: list[bytes]) -> None:
    js = nc.jetstream()
    for line in lines:
        body = orjson.loads(line)
        kind = body.get("type") or body.get("event")
        await js.publish_async(f"connections.{body['sessionId']}.{kind}", line)
    await js.publish_async_completed()


async def wait_for_head(nc: Client, position: int, timeout: float = 120) -> int:
    """Ask until the ledger's head reaches `position` (or the time is up); returns the head."""
    deadline = time.monotonic() + timeout
    head = 0
    while time.monotonic() < deadline:
        try:
            answer = await ask(nc, "ledger.sessions.probe.count", {"minPosition": position}, within=15)
            head = int(answer.get("position", 0))
        except Exception:  # the service may be restarting
            await asyncio.sleep(0.2)
            continue
        if head >= position:
            return head
    return head


async def ledger_stream(nc: Client, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
    """Every message of the LEDGER stream, in stream order."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while (await js.stream_info("LEDGER")).state.messages < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    total = (await js.stream_info("LEDGER")).state.messages
    # Reading has a deadline of its own: an ordered push consumer with flow control reads a few
    # thousand messages a second on a loaded machine, whatever the wait above took.
    deadline = time.monotonic() + timeout
    # An ordered consumer: read, not consumed, and made again by the client from where it was
    # when its server goes away (on a cluster, a node restarted not long before).
    out: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def collect(message: Msg) -> None:
        out.append(orjson.loads(message.data))
        if len(out) >= total:
            done.set()

    subscription = await js.subscribe("ledger.records.>", stream="LEDGER", cb=collect, ordered_consumer=True)
    try:
        await asyncio.wait_for(done.wait(), max(5.0, deadline - time.monotonic()) if total else 0.1)
    except TimeoutError:
        raise AssertionError(f"LEDGER: {len(out)} of {total} messages read") from None
    finally:
        await subscription.unsubscribe()
    return out[:total]


def final_live_sets(events: list[Event]) -> dict[str, set[str]]:
    """The two-phase set's final state: created and never destroyed (order does not matter)."""
    created = {(e.session_id, e.connection_id) for e in events if e.type.value == "connectionCreated"}
    destroyed = {(e.session_id, e.connection_id) for e in events if e.type.value == "connectionDestroyed"}
    live: dict[str, set[str]] = {e.session_id: set() for e in events}
    for session, connection in created - destroyed:
        live[session].add(connection)
    return live


def check_counts_follow_the_ledger(records: list[dict[str, Any]]) -> None:
    """Fold the records in position order and check each one's `count` against the fold."""
    state: dict[tuple[str, str], bool] = {}
    counts: dict[str, int] = {}
    for record in records:
        session = record["sessionId"]
        key = (session, record["connection"]["connectionId"])
        counts.setdefault(session, 0)
        if not record["defaultPrevented"]:
            if record["type"] == "connectionCreated" and key not in state:
                state[key] = True
                counts[session] += 1
            elif record["type"] == "connectionDestroyed":
                if state.get(key) is True:
                    counts[session] -= 1
                state[key] = False
        assert record["count"] == counts[session], f"record {record['position']}"
