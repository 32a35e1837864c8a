"""`connledger relay`: the relay as a program of its own.

`serve` starts one as a child process (LEDGER_RELAY_MODE=process, the default), so that
republishing every record runs on another core than ingest: on a 2-core machine the relay
inline took about half of ingest's throughput. It can also be run by hand beside instances
that have LEDGER_RELAY_MODE=off. Several may run: the lease lets one relay at a time.

It wakes on `ledger.head` announcements and polls besides. Started by `serve`, it watches its
standard input, a pipe from the parent: when the parent goes away, even by SIGKILL, the pipe
closes and the relay stops cleanly instead of living on as an orphan holding the lease.

Its standard output says "ready: ..." once it runs, "refused <position>: ..." when the stream
refused a record for good, which stopped it (relay.py), and "lease held" / "lease let go" as
it takes and leaves the relay lease: `serve` reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from service.app.bootstrap import open_ledger
from service.app.process_tuning import settle_for_serving
from service.commit_signal import CommitSignal
from service.errors import ConfigurationError
from service.nats.connect import connect
from service.nats.head import follow_heads
from service.nats.relay import Relay
from service.nats.streams import ensure_ledger_stream
from service.settings import Settings

__all__ = ["run_relay"]

log = logging.getLogger(__name__)


async def _stdin_closed() -> None:
    """Return once standard input reaches end of file (the parent has gone)."""
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(fd)
            closed.set()

    loop.add_reader(fd, readable)
    try:
        await closed.wait()
    finally:
        loop.remove_reader(fd)


async def run_relay(settings: Settings, *, watch_stdin: bool = False) -> int:
    if not settings.nats_url:
        raise ConfigurationError("LEDGER_NATS_URL: the relay needs the NATS server of the service; set it")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_ledger(settings, run_migrations=False, with_hooks=False) as ledger:
        nc = await connect(settings, settings.nats_url, name="connection-ledger-relay")
        committed = CommitSignal()
        relay = Relay(
            nc,
            ledger.store,
            settings,
            committed,
            on_refused=lambda position, reason: print(
                f"refused {position}: the relay stopped; the stream {settings.ledger_stream} refused that "
                f"record for good ({reason})",
                flush=True,
            ),
            on_lease=lambda holding: print("lease held" if holding else "lease let go", flush=True),
        )
        await follow_heads(nc, lambda _position: committed.ring())
        await ensure_ledger_stream(nc, settings)
        running = asyncio.create_task(relay.run(), name="relay")
        settle_for_serving()
        print(f"ready: relaying ledger records to the stream {settings.ledger_stream}", flush=True)
        stoppers: set[asyncio.Task[Any]] = {asyncio.create_task(stop.wait())}
        if watch_stdin:
            stoppers.add(asyncio.create_task(_stdin_closed()))
        done, _ = await asyncio.wait({running, *stoppers}, return_when=asyncio.FIRST_COMPLETED)
        failed = running in done and running.exception() is not None
        if failed:
            log.error("the relay failed", exc_info=running.exception())
        relay.stop()
        for task in stoppers:
            task.cancel()
        # The chunk in hand is published and its checkpoint written before the relay returns.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(running, 30)
        with contextlib.suppress(Exception):
            await nc.close()
        return 1 if failed else 0
