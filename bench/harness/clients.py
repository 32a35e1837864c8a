"""Clients of the service over NATS: requests, the head, replay, paced request bursts, and a
bare responder to compare them with."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.harness.clock import now
from bench.harness.service import Service

__all__ = [
    "FLOOR_SUBJECT",
    "PROBE_SUBJECT",
    "REQUEST_ERRORS",
    "Burst",
    "ask",
    "floor_responder",
    "replay",
    "request_burst",
    "wait_for_head",
]

PROBE_SUBJECT = "ledger.sessions.x.count"


async def ask(nc: Client, subject: str, body: dict[str, Any] | None = None, within: float = 10) -> Any:
    reply = await nc.request(subject, orjson.dumps(body) if body is not None else b"", timeout=within)
    return orjson.loads(reply.data)


REQUEST_ERRORS = (nats.errors.TimeoutError, TimeoutError, nats.errors.NoRespondersError)


async def wait_for_head(nc: Client, service: Service, position: int, within: float) -> tuple[float, int]:
    """Poll until the ledger's head reaches `position`: (the time it did, the head)."""
    deadline = now() + within
    head = 0
    while now() < deadline:
        service.check()
        try:
            head = int((await ask(nc, PROBE_SUBJECT, {"minPosition": position}))["position"])
        except REQUEST_ERRORS:
            await asyncio.sleep(0.1)
            continue
        if head >= position:
            return now(), head
    raise TimeoutError(f"the head reached {head}, not {position}, within {within:.0f} s")


async def replay(nc: Client, request: dict[str, Any], within: float = 60) -> tuple[list[dict[str, Any]], str]:
    """`ledger.replay`: the records sent to our inbox until the end marker, and the marker's
    value (the last position sent)."""
    inbox = nc.new_inbox()
    records: list[dict[str, Any]] = []
    end: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def collect(message: Msg) -> None:
        if message.headers and "Ledger-Replay-End" in message.headers:
            if not end.done():
                end.set_result(message.headers["Ledger-Replay-End"])
        else:
            records.append(orjson.loads(message.data))

    # Room for a whole ledger's records waiting for the callback (the default is 65,536).
    subscription = await nc.subscribe(inbox, cb=collect, pending_msgs_limit=2_000_000)
    try:
        await nc.publish("ledger.replay", orjson.dumps(request), reply=inbox)
        last = await asyncio.wait_for(end, within)
    finally:
        await subscription.unsubscribe()
    return records, last


# Baseline (c) of phase 5: the least any NATS responder can do on this machine under the same
# load. A process of its own that answers a constant of the count answer's size at once: what
# its requests take is the client, nats-server and the machine, and none of the service.
FLOOR_SUBJECT = "bench.floor.count"
FLOOR_RESPONDER = """
import asyncio, sys
import nats, uvloop

async def main():
    nc = await nats.connect(sys.argv[1])
    answer = b'{"sessionId":"floor-session-0000","count":3,"position":123456}'

    async def respond(message):
        await message.respond(answer)

    await nc.subscribe(sys.argv[2], cb=respond)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


@contextlib.asynccontextmanager
async def floor_responder(url: str) -> AsyncIterator[int]:
    """Start the bare responder on `FLOOR_SUBJECT`; yields its pid once it is subscribed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOR_RESPONDER, url, FLOOR_SUBJECT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"the bare responder did not start (it said {line!r})")
        yield process.pid
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@dataclass
class Burst:
    """Paced count requests: latencies of the answered ones, how many failed, and how late the
    client sent each request (its own lag, which would otherwise pass for the service's)."""

    latencies: list[float]
    failures: int
    lags: list[float]
    rate: float


async def request_burst(
    nc: Client, sessions: list[str], rate: float, seconds: float, begin: float, floor: Burst | None = None
) -> Burst:
    """`rate` count requests/s for `seconds`, each sent without waiting for the one before.
    With `floor`, the window is twice as long, and in every other second the requests go to the
    bare responder instead (recorded in `floor`): both at the same rate, interleaved in time,
    so that both meet the same machine."""
    total = int(rate * seconds * (2 if floor is not None else 1))
    burst = Burst([], 0, [], 0.0)
    last_answer = begin

    async def one(subject: str, into: Burst) -> None:
        nonlocal last_answer
        sent = now()
        try:
            await nc.request(subject, b"", timeout=2)
        except REQUEST_ERRORS:
            into.failures += 1
            return
        last_answer = now()
        into.latencies.append(last_answer - sent)

    tasks: set[asyncio.Task[None]] = set()
    await asyncio.sleep(max(0.0, begin - now()))
    issued = 0
    while issued < total:
        due = min(total, int((now() - begin) * rate) + 1)
        while issued < due:
            into = floor if floor is not None and int(issued / rate) % 2 else burst
            into.lags.append(now() - (begin + issued / rate))
            subject = (
                FLOOR_SUBJECT
                if into is floor
                else f"ledger.sessions.{sessions[(issued * 7919) % len(sessions)]}.count"
            )
            task = asyncio.create_task(one(subject, into))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            issued += 1
        await asyncio.sleep(0.001)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    if floor is None:
        burst.rate = len(burst.latencies) / max(last_answer - begin, 1e-9)
    else:
        # Each had every other second of the window.
        burst.rate = len(burst.latencies) / seconds
        floor.rate = len(floor.latencies) / seconds
    return burst
