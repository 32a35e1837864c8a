"""The relay: every ledger record, in position order, to the JetStream stream LEDGER on
`ledger.records.<sessionId>.<type>` with `Nats-Msg-Id: <event id>`.

Progress is a checkpoint in the database, written after JetStream acknowledged the records up
to it; a crash between the two republishes a few records, which JetStream's duplicate window
drops (and whose position and id identify them anyway). Only the instance holding the relay
lease publishes; when it dies, the lease is freed and another takes over from the checkpoint.
It wakes on this process's commits and polls for other instances' commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import aclosing

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig

from service.errors import TransientError
from service.ledger.checkpoints import read_checkpoint, write_checkpoint
from service.ledger.lease import Lease
from service.ledger.records import record_json
from service.ledger.store import LedgerStore, transient_errors
from service.notify import CommitSignal
from service.settings import Settings

__all__ = ["RELAY_CHECKPOINT", "Relay"]

log = logging.getLogger(__name__)

RELAY_CHECKPOINT = "relay"
RELAY_LEASE = 0x52454C59  # "RELY"
CHUNK = 2000
POLL_SECONDS = 0.5


class Relay:
    def __init__(self, nc: Client, store: LedgerStore, settings: Settings, committed: CommitSignal) -> None:
        self.nc = nc
        self.store = store
        self.settings = settings
        self.committed = committed
        self.lease = Lease(store.engine, RELAY_LEASE)
        self.stopping = asyncio.Event()
        self.position = 0

    async def ensure_stream(self) -> None:
        js = self.nc.jetstream()
        try:
            await js.stream_info(self.settings.ledger_stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.settings.ledger_stream, subjects=["ledger.records.>"], storage=StorageType.FILE
                )
            )

    async def run(self) -> None:
        await self.ensure_stream()
        try:
            while not self.stopping.is_set():
                try:
                    with transient_errors():
                        acquired = await self.lease.try_acquire()
                    if not acquired:
                        await self.committed.wait(2.0)
                        continue
                    self.position = await read_checkpoint(self.store.engine, RELAY_CHECKPOINT)
                    log.info("relay lease held: publishing records after position %d", self.position)
                    while not self.stopping.is_set():
                        if not await self._publish_next():
                            await self.committed.wait(POLL_SECONDS)
                except (TransientError, nats.errors.Error, TimeoutError) as error:
                    log.warning("relay paused: %s", error)
                except Exception:
                    # The relay must not take ingest down with it: log, step back, start again
                    # from the checkpoint (what was published twice, JetStream deduplicates).
                    log.exception("relay failed; restarting it from its checkpoint")
                await self.lease.release()
                await self.committed.wait(1.0)
        finally:
            await self.lease.release()

    async def _publish_next(self) -> bool:
        """Publish the next chunk after the checkpoint; False when there was nothing new."""
        js = self.nc.jetstream()
        futures = []
        last = self.position
        async with aclosing(self.store.records(after=self.position, limit=CHUNK)) as pages:
            async for rows in pages:
                for row in rows:
                    futures.append(
                        await js.publish_async(
                            f"ledger.records.{row[3]}.{row[4]}",
                            record_json(row),
                            headers={"Nats-Msg-Id": row[2]},
                        )
                    )
                    last = row[0]
        if not futures:
            return False
        await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
        await write_checkpoint(self.store.engine, RELAY_CHECKPOINT, last)
        self.position = last
        return True

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(Exception):
            self.committed.ring()
