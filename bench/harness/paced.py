"""Requests at a fixed rate from one client, each sent at its time without waiting for the ones
before (an open loop: a slow answer does not slow the rate down and hide itself), each latency
recorded; several kinds of request interleaved one by one, so that a query and its baseline
meet the same machine. Over HTTP by a small keep-alive client of its own (a general-purpose one
costs more than the answers it measures), over NATS by nats-py's request/reply. Run on uvloop
(traffic.run_loop), as the service is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bench.harness.clock import now
from bench.harness.figures import Figures, percentile

__all__ = ["HttpClient", "Kind", "Paced", "paced"]


@dataclass
class Kind:
    """A kind of request: `ask(i)` sends its i-th and returns the answer's body (raising when
    there is none: an error status, a timeout); `right(i, body)` checks the answer, once its
    latency is taken."""

    ask: Callable[[int], Awaitable[bytes]]
    right: Callable[[int, bytes], bool]


@dataclass
class Paced:
    """One kind's requests: latencies of the answers (s), how many answers were wrong, how many
    requests got none, and how late the client sent each (its own lag, which would otherwise
    pass for the service's)."""

    latencies: list[float] = field(default_factory=list)
    wrong: int = 0
    failed: int = 0
    lags: list[float] = field(default_factory=list)

    def figures(self) -> Figures:
        return {
            "p50": percentile(self.latencies, 50) * 1000,
            "p99": percentile(self.latencies, 99) * 1000,
            "max": max(self.latencies, default=float("nan")) * 1000,
            "answered": float(len(self.latencies)),
            "wrong": float(self.wrong),
            "failed": float(self.failed),
            "lag_p99": percentile(self.lags, 99) * 1000,
        }


async def paced(kinds: Sequence[Kind], rate: float, seconds: float, within: float = 5) -> list[Paced]:
    """`rate` requests/s of each of `kinds` for `seconds`, the kinds taking turns (request n is
    kind n % len(kinds), its i-th = n // len(kinds)); what each kind got."""
    total = int(rate * seconds) * len(kinds)
    results = [Paced() for _ in kinds]
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        kind, into, i = kinds[n % len(kinds)], results[n % len(kinds)], n // len(kinds)
        sent = now()
        try:
            async with asyncio.timeout(within):
                body = await kind.ask(i)
        except Exception:  # counted, not raised: the window goes on
            into.failed += 1
            return
        into.latencies.append(now() - sent)
        if not kind.right(i, body):
            into.wrong += 1

    begin = now() + 0.01
    step = 1 / (rate * len(kinds))
    issued = 0
    while issued < total:
        due = min(total, int((now() - begin) / step) + 1)
        while issued < due:
            results[issued % len(kinds)].lags.append(now() - (begin + issued * step))
            task = asyncio.create_task(one(issued))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            issued += 1
        await asyncio.sleep(max(0.0, begin + issued * step - now()))
    if tasks:
        await asyncio.wait(tasks, timeout=within + 1)
    return results


class HttpClient:
    """GET over HTTP/1.1 keep-alive connections to one server: a connection is taken from the
    idle ones (or opened) for each request, and given back once its answer is read whole. One
    idle for longer than IDLE_SECONDS is closed rather than used (the server's keep-alive
    timeout, uvicorn's 5 s, may have closed it). The service answers with a Content-Length (no
    chunked bodies)."""

    IDLE_SECONDS = 2.0

    def __init__(self, base_url: str) -> None:
        host, _, port = base_url.removeprefix("http://").rstrip("/").partition(":")
        self.host = host
        self.port = int(port or 80)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now() - since < self.IDLE_SECONDS:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def get(self, target: str) -> bytes:
        """The body of GET `target` (a path with its query); raises unless the status is 200."""
        reader, writer = await self._connection()
        try:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self.idle.append((reader, writer, now()))
        if status != 200:
            raise RuntimeError(f"GET {target}: {status} {body[:200]!r}")
        return body

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for _, writer, _ in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
