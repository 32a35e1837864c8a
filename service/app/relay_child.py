"""The relay as a child process of `serve` (LEDGER_RELAY_MODE=process): started once the
streams exist, started again with backoff should it exit on its own, and stopped on drain.

The child gets the parent's settings through the environment, with the NATS URL the parent
resolved (the bundled server's included), and a pipe as its standard input, which it watches
(relay_command.py). Its log lines go to the parent's standard error; its standard output tells
the parent that it is ready, and the position of a record the stream refused for good, which
stopped it: the child then stays up, idle, rather than exit and be started again to meet the
same refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["RelayProcess"]

log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_SECONDS = 35.0


class RelayProcess:
    def __init__(
        self,
        nats_url: str,
        on_refused: Callable[[int], None] | None = None,
        on_lease: Callable[[bool], None] | None = None,
    ) -> None:
        self.env = {**os.environ, "LEDGER_NATS_URL": nats_url}
        # Called with the position of a record the stream refused for good (relay.py).
        self.on_refused = on_refused
        # Called with True when the child takes the relay lease, False when it leaves it or exits.
        self.on_lease = on_lease
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = asyncio.Event()
        # Set once the first child says it is connected and relaying (or standing by for the
        # lease): serve says "ready" only after that, so no early record waits for a start-up.
        self.started = asyncio.Event()
        self.restarts = 0

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "relay",
            "--watch-stdin",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self.env,
            # A session of its own: Ctrl-C in a terminal reaches only the parent, which stops
            # the relay in its turn, after ingest's last batch.
            start_new_session=True,
        )

    async def run(self) -> None:
        """Keep a relay child running until `stop`."""
        failures = 0
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            started = loop.time()
            self.process = await self._spawn()
            exited = asyncio.create_task(self._watch(self.process))
            stopping = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if self.stopping.is_set():
                exited.cancel()
                break
            code = exited.result()
            if loop.time() - started > 60:
                failures = 0  # it had been running well: this is a new failure, not a loop
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            failures += 1
            self.restarts += 1
            log.error("the relay process exited (status %s); starting it again in %.0f s", code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
        await self._terminate()

    async def _watch(self, process: asyncio.subprocess.Process) -> int:
        """Wait for the child to exit, noting its "ready" and "refused" lines on the way."""
        assert process.stdout is not None
        while line := await process.stdout.readline():
            if line.startswith(b"ready"):
                self.started.set()
            elif line.startswith(b"refused ") and self.on_refused is not None:
                self.on_refused(int(line.split()[1].rstrip(b":")))
            elif line.startswith(b"lease ") and self.on_lease is not None:
                self.on_lease(line.startswith(b"lease held"))
        if self.on_lease is not None:
            self.on_lease(False)  # a child gone holds nothing
        return await process.wait()

    async def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        # SIGTERM: the relay finishes the chunk in hand and writes its checkpoint.
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            log.warning("the relay process did not stop in %.0f s; killing it", STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def stop(self) -> None:
        self.stopping.set()
