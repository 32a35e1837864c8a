"""The relay: every ledger record, in position order, to the JetStream stream LEDGER on
`ledger.records.<sessionId>.<type>` with `Nats-Msg-Id: <event id>`.

Progress is a checkpoint in the database, written after JetStream acknowledged the records up
to it, at most once every CHECKPOINT_SECONDS while records flow (and when the relay stops): a
crash republishes the records of the last few moments, which JetStream's duplicate window (two
minutes by default) drops, and whose position and id identify them anyway. Only the instance
holding the relay lease publishes; when it dies, the lease is freed and another takes over from
the checkpoint. The lease can also be lost under a live relay (on PostgreSQL, when the server
or the network drops the lease's connection), and another instance then takes over while this
one does not know it yet: so the relay makes sure the lease is still its own before each chunk
it publishes, and stops publishing as soon as it is not, going back to waiting for the lease as
the others do. Until it finds out, the two of them publish, and the stream still gets the
records in order: each is stored only after the one before it (chained_publisher.py), whoever
sent which. The checkpoint only moves forward, whoever writes it (store.py): a write of the
relay that lost the lease cannot take its successor's back.

A record the stream refuses for good (larger than its max_msg_size, or than the NATS server
takes) stops the relay: no record after it may be published before it, and publishing it
again cannot help. The relay says so in an error naming the record's position and the reason,
through `on_refused` (serve sets the ledger_relay_refused_position gauge with it), and waits
until it is stopped, having let the lease go.

On a JetStream cluster, a node's death leaves a stream without a leader for the seconds of an
election: publishes get "no responders", and the replies to a batch in flight on the old
leader (or on a connection to the dead node) never come. The relay learns of it at once (the
503, the reconnect, or the advisory of the new leader's election), keeps its lease and its
position, and publishes the records not known to be stored again after short pauses
(UNAVAILABLE_SECONDS), with the same Nats-Msg-Ids: the stream stores each once.

Every other failure (the database or NATS unreachable, a timeout, no stream) pauses it for a
while that grows with each failure in a row (RETRY_SECONDS), after which it starts again from
the checkpoint.

It wakes on this process's commits and polls for other instances' commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import aclosing

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client

from service.commit_signal import CommitSignal
from service.errors import TransientError
from service.ledger.checkpoints import read_checkpoint
from service.ledger.lease import Lease
from service.ledger.store import LedgerStore, transient_errors
from service.nats.chained_publisher import AckedPublisher, PublishFailed, StreamUnavailable
from service.nats.streams import ensure_ledger_stream
from service.settings import Settings
from service.subjects import HEADER_MSG_ID, record_subject

__all__ = ["RELAY_CHECKPOINT", "Relay"]

log = logging.getLogger(__name__)

RELAY_CHECKPOINT = "relay"
RELAY_LEASE = 0x52454C59  # "RELY"
CHUNK = 2000
POLL_SECONDS = 0.5
CHECKPOINT_SECONDS = 1.0
ACK_SECONDS = 30.0
# The pause after each failure in a row; the last one repeats.
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
# The pause while the stream has no leader, in a row: an election takes seconds, and records
# wait for it; the last one repeats.
UNAVAILABLE_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0)
LEADER_CHECK_SECONDS = 1.0


class LeaseLost(Exception):
    """The relay lease is no longer this instance's: another may be relaying now."""


class RecordRefused(Exception):
    """The stream refused a record for good: the relay cannot go past it."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"record {position}: {reason}")
        self.position = position
        self.reason = reason


class Relay:
    def __init__(
        self,
        nc: Client,
        store: LedgerStore,
        settings: Settings,
        committed: CommitSignal,
        on_refused: Callable[[int, str], None] | None = None,
        on_lease: Callable[[bool], None] | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.settings = settings
        self.committed = committed
        self.lease = Lease(store.engine, RELAY_LEASE)
        self.stopping = asyncio.Event()
        self.position = 0
        self._saved = 0
        self._saved_at = 0.0
        self._saving: asyncio.Task[None] | None = None
        # Called with the position of a record the stream refused for good, and why.
        self.on_refused = on_refused
        # Called with True when this relay takes the lease, False when it lets it go: which
        # instance relays, for the ledger_relay_lease_held gauge.
        self.on_lease = on_lease
        self._holding = False
        self._failures = 0  # in a row: how long the next pause is
        self._unavailable = 0  # the stream unavailable, in a row

    async def run(self) -> None:
        await ensure_ledger_stream(self.nc, self.settings)
        try:
            while not self.stopping.is_set():
                pause = 0.0
                try:
                    with transient_errors():
                        acquired = await self.lease.try_acquire()
                    if not acquired:
                        await self.committed.wait(2.0)
                        continue
                    checkpoint = await read_checkpoint(self.store.engine, RELAY_CHECKPOINT)
                    self.position = self._saved = max(checkpoint, await self._stored_up_to())
                    log.info("relay lease held: publishing records after position %d", self.position)
                    self._lease_changed(True)
                    publisher = AckedPublisher(self.nc, self.settings.ledger_stream)
                    await publisher.start()
                    try:
                        while not self.stopping.is_set():
                            # Taken before the read: a commit while it runs ends the wait at once.
                            armed = self.committed.armed()
                            try:
                                published = await self._publish_next(publisher)
                            except StreamUnavailable as error:
                                if error.no_responders and await self._stream_has_a_leader():
                                    # Not an election: the stream does not take the records'
                                    # subjects, a configuration for the operator to mend.
                                    raise PublishFailed(error.reason, stored=0) from error
                                # A leader election (a node died): the lease and the position
                                # are kept, and the records not known to be stored go again
                                # with the same Nats-Msg-Ids once there is a leader.
                                await self._wait_for_the_stream(error)
                                continue
                            if not published:
                                self._save_soon()  # idle: the throttled write comes due here
                                await self.committed.wait(POLL_SECONDS, armed)
                        await self._save_now()
                    finally:
                        with contextlib.suppress(Exception):
                            await publisher.close()
                except LeaseLost:
                    log.warning(
                        "relay lease lost (its database connection went away): stopped publishing, "
                        "waiting for the lease again"
                    )
                except RecordRefused as refused:
                    await self._stop_at(refused)
                    return
                except (TransientError, nats.errors.Error, TimeoutError, PublishFailed) as error:
                    pause = self._next_pause()
                    log.warning("relay paused for %.0f s: %s", pause, error)
                except Exception:
                    # The relay must not take ingest down with it: log, step back, start again
                    # from the checkpoint (what was published twice, JetStream deduplicates).
                    pause = self._next_pause()
                    log.exception("relay failed; restarting it from its checkpoint in %.0f s", pause)
                await self._release()
                if pause:
                    # Not woken by commits: under a steady ingest that would be no pause at all.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), pause)
                else:
                    await self.committed.wait(1.0)
        finally:
            await self._release()

    async def _stored_up_to(self) -> int:
        """The position of the last record the stream holds, when it is this ledger's.

        The checkpoint trails what was published by up to CHECKPOINT_SECONDS, and a relay that
        starts from it publishes those records again. Within JetStream's duplicate window
        (two minutes by default) the stream drops them by their Nats-Msg-Id; past it, after a
        relay was down for longer, it would store them again, behind records that came after
        them. So the relay starts after the stream's last record, when that record is the
        ledger's own at its position (a stream kept from another ledger is not trusted)."""
        js = self.nc.jetstream()
        stream = self.settings.ledger_stream
        state = (await js.stream_info(stream)).state
        if not state.messages or not state.last_seq:
            return 0
        try:
            last = await js.get_msg(stream, seq=state.last_seq)
            position = int(orjson.loads(last.data or b"")["position"])
        except (nats.js.errors.NotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return 0  # gone meanwhile (retention), or not a record: the checkpoint decides
        event_id = (last.headers or {}).get(HEADER_MSG_ID)
        with transient_errors():
            if event_id is None or await self.store.event_id_at(position) != event_id:
                log.warning(
                    "the stream %s ends with a record this ledger does not hold at position %d; "
                    "relaying from the checkpoint",
                    stream,
                    position,
                )
                return 0
        return position

    def _lease_changed(self, holding: bool) -> None:
        if holding != self._holding:
            self._holding = holding
            if self.on_lease is not None:
                self.on_lease(holding)

    async def _release(self) -> None:
        await self.lease.release()
        self._lease_changed(False)

    async def _stream_has_a_leader(self) -> bool:
        try:
            # A short wait: the records wait while this one does.
            js = self.nc.jetstream(timeout=LEADER_CHECK_SECONDS)
            info = await js.stream_info(self.settings.ledger_stream)
        except (nats.errors.Error, TimeoutError):
            return False  # its API unanswered too: no leader, or no server
        # A lone server's stream has no cluster information, and is its own leader.
        return info.cluster is None or bool(info.cluster.leader)

    async def _wait_for_the_stream(self, error: StreamUnavailable) -> None:
        pause = UNAVAILABLE_SECONDS[min(self._unavailable, len(UNAVAILABLE_SECONDS) - 1)]
        self._unavailable += 1
        log.info("relay: %s; publishing again after position %d in %.2f s", error, self.position, pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), pause)

    def _next_pause(self) -> float:
        pause = RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS) - 1)]
        self._failures += 1
        return pause

    async def _stop_at(self, refused: RecordRefused) -> None:
        """Stop relaying for good (until this relay is started again): the records before the
        refused one are published and their checkpoint written, the lease let go (another
        instance may be able to publish the record, through a NATS server that takes more),
        and nothing more is tried."""
        log.error(
            "relay stopped: the stream %s refused the record at position %d for good (%s); no record "
            "after it is published until it is taken (raise the stream's max_msg_size or the NATS "
            "server's max_payload) and the relay is started again",
            self.settings.ledger_stream,
            refused.position,
            refused.reason,
        )
        if self.on_refused is not None:
            self.on_refused(refused.position, refused.reason)
        await self._save_now()
        await self._release()
        await self.stopping.wait()

    async def _publish_next(self, publisher: AckedPublisher) -> bool:
        """Publish the next chunk after the checkpoint; False when there was nothing new."""
        messages: list[tuple[str, bytes, str]] = []
        positions: list[int] = []
        async with aclosing(self.store.relay_records(after=self.position, limit=CHUNK)) as pages:
            async for rows in pages:
                messages.extend((record_subject(r[2], r[3]), r[4].encode(), r[1]) for r in rows)
                positions.extend(r[0] for r in rows)
        if not messages:
            return False
        # Checked right before publishing, chunk by chunk: a relay whose lease went away must
        # not publish on beside the instance that took it over.
        if not await self.lease.still_held():
            raise LeaseLost
        try:
            await publisher.publish(messages, timeout=ACK_SECONDS)
        except PublishFailed as failed:
            # The records before the one not stored are (and none after it): the checkpoint may
            # move up to them.
            if failed.stored:
                self.position = positions[failed.stored - 1]
                self._save_soon()
            if failed.for_good:
                raise RecordRefused(positions[failed.stored], failed.reason) from failed
            raise
        self.position = positions[-1]
        self._failures = self._unavailable = 0
        self._save_soon()
        return True

    def _save_soon(self) -> None:
        """Write the checkpoint in the background when it moved, at most once a
        CHECKPOINT_SECONDS and one write at a time: one write per chunk would take the
        database's writer lock as often as ingest does, and on SQLite a writer in another
        process can wait for that lock for a good part of a second, which the records
        behind it must not."""
        if self.position == self._saved or (self._saving is not None and not self._saving.done()):
            return
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._saved_at < CHECKPOINT_SECONDS:
            return
        self._saved_at = loop_time
        self._saving = asyncio.create_task(self._write(self.position))

    async def _write(self, position: int) -> None:
        try:
            await self.store.save_position(RELAY_CHECKPOINT, position)
        except TransientError as error:
            log.warning("relay checkpoint not written (the next one will be): %s", error)
            return
        self._saved = max(self._saved, position)

    async def _save_now(self) -> None:
        """Write the checkpoint up to what was published (when the relay stops relaying)."""
        if self._saving is not None:
            await self._saving
        if self.position != self._saved:
            await self._write(self.position)

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(Exception):
            self.committed.ring()
