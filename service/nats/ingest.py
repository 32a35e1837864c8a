"""JetStream ingest: a durable pull consumer, read in batches through the pipeline.

Acknowledgement: a batch's messages are acked only after `pipeline.process` returned, i.e.
after the transaction holding their ledger rows, projection rows and rejections committed. A
crash before that means redelivery, and redelivered events are duplicates, acknowledged and
not appended again (idempotency is the unique event id, forever).

A transient failure (database unreachable) acks nothing: the batch stays in hand and is retried
with backoff until the database is back. No restart.

In progress: a message delivered and not acknowledged within the consumer's ack_wait is
delivered again, to this instance or another, which would run its hooks a second time. A batch
may rightly take longer than that: slow (async) hooks, a commit waiting for the writer lock
behind `connledger rebuild` or an import, a database outage. So while any batch is in hand,
every message delivered and not yet acknowledged (the batches being prepared or committed, and
those waiting in the feed) is told "in progress" (`+WPI`, which restarts its ack_wait) every
third of the ack_wait. Sync hooks run on the event loop and hold this up like everything else:
a hook that takes long must be async.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from service.commit_signal import CommitSignal
from service.errors import TransientError
from service.inbound import Incoming
from service.ledger.model import Rejected
from service.ledger.store import now_ms
from service.nats.acks import ack_all, progress_all
from service.nats.head import announce_head
from service.nats.pull_feed import ByteBudget, PullFeed
from service.nats.streams import ensure_connections_stream
from service.pipeline.batches import Pipeline, Prepared
from service.pipeline.decode_ahead import CommitBehind
from service.pipeline.outcomes import Deferred
from service.settings import Settings
from service.subjects import (
    HEAD,
    HEADER_RAW_TRUNCATED,
    HEADER_REJECT_CODE,
    HEADER_REJECT_MESSAGE,
    HEADER_SUBJECT,
    REJECTED,
    rejected_subject,
)

__all__ = ["Ingestor"]

log = logging.getLogger(__name__)
T = TypeVar("T")
# When a copy of an event whose hooks another instance is running comes again: about when that
# instance has appended it (a batch's time), not so soon that it is handed back many times.
DEFERRED_REDELIVERY_SECONDS = 1.0
# The header block's own framing (NATS/1.0 line, blank line) and the truncation header.
HEADERS_ALLOWANCE = 128


def _header_value(text: str) -> str:
    # NATS header values are one line.
    return " ".join(text.split())[:1024]


class Ingestor:
    def __init__(self, nc: Client, pipeline: Pipeline, settings: Settings, committed: CommitSignal) -> None:
        self.nc = nc
        self.pipeline = pipeline
        self.settings = settings
        self.committed = committed
        self.stopping = asyncio.Event()
        self.batches = 0
        self.messages = 0
        self._announced = 0
        # Batches taken from the feed and not yet acknowledged, by id(): told "in progress"
        # while they are worked on (see the module docstring).
        self._in_hand: dict[int, Sequence[Msg]] = {}

    async def run(self) -> None:
        settings = self.settings
        await ensure_connections_stream(self.nc, settings)
        ack_wait = await self._ensure_consumer()
        feed = PullFeed(
            self.nc,
            settings.connections_stream,
            settings.consumer_name,
            batch=settings.batch_size,
            expires=settings.fetch_timeout,
            budget=ByteBudget.of(settings),
        )
        await feed.start()
        keeper = asyncio.create_task(self._keep_in_progress(feed, ack_wait / 3), name="in progress")
        try:
            await self._ingest(feed)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        log.info("ingest stopped after %d batches, %d messages", self.batches, self.messages)

    async def _ingest(self, feed: PullFeed) -> None:
        settings = self.settings
        # Three things overlap: messages keep arriving into the feed while batches are worked
        # on, and, when there is a backlog and no hooks, the next batch is decoded while the
        # one before it is being committed (see pipeline/decode_ahead.py). Each batch is acked
        # only after its own commit, by `_finish`.
        decode_ahead = not self.pipeline.hooks
        commits: CommitBehind[None] = CommitBehind()
        while not self.stopping.is_set():
            if commits.committing and (not decode_ahead or feed.buffered < settings.batch_size // 2):
                # No backlog: wait for the commit, then take everything that arrived during
                # it in one batch. Decoding ahead pays only when a backlog keeps batches full;
                # under a light load it would make each message wait out one more commit.
                await commits.wait()
            try:
                messages = await feed.take(settings.fetch_timeout)
            except nats.errors.Error as error:
                # Disconnected or reconnecting: nats-py reconnects by itself; try again shortly.
                log.warning("pulling messages failed, retrying: %s", error)
                await asyncio.sleep(0.5)
                continue
            if not messages:
                continue
            self._in_hand[id(messages)] = messages  # until _finish has acked them
            prepared = await self._prepare(messages)
            # The batch before is committed and acked (or its error raised) before this one's
            # commit starts.
            await commits.then(self._finish(messages, prepared))
        await commits.wait()
        # Drain: nothing more is asked for; what was delivered is committed and acked.
        rest = await feed.close()
        self._in_hand[id(rest)] = rest
        try:
            for start in range(0, len(rest), settings.batch_size):
                chunk = rest[start : start + settings.batch_size]
                self._in_hand[id(chunk)] = chunk
                await self._finish(chunk, await self._prepare(chunk))
        finally:
            self._in_hand.pop(id(rest), None)

    async def _keep_in_progress(self, feed: PullFeed, interval: float) -> None:
        """Every `interval`, tell JetStream that each message delivered and not yet acked is
        still being worked on, so that it is not delivered again (see the module docstring).
        Under a steady flow this costs one small write per batch in hand every `interval`."""
        while True:
            await asyncio.sleep(interval)
            if not self._in_hand:
                continue  # nothing taken: what waits in the feed is taken at once
            held = [m for batch in list(self._in_hand.values()) for m in batch]
            try:
                # The claims on their events' hooks too (pipeline/batches.py), for as long as the
                # messages themselves: a claim let lapse would let another instance run them.
                await self.pipeline.renew_claims()
            except Exception as error:
                log.warning("renewing the claims on the hooks of the batch in hand failed: %s", error)
            try:
                await progress_all(self.nc, [*held, *feed.waiting()])
            except Exception as error:  # disconnected: the server redelivers at worst
                log.warning("telling JetStream the batch in hand is in progress failed: %s", error)

    async def _ensure_consumer(self) -> float:
        """Create the durable consumer, or set its ack_wait to LEDGER_INGEST_ACK_WAIT if it has
        another; returns the ack_wait it has (seconds)."""
        settings = self.settings
        js = self.nc.jetstream()
        try:
            info = await js.consumer_info(settings.connections_stream, settings.consumer_name)
        except nats.js.errors.NotFoundError:
            info = await js.add_consumer(
                settings.connections_stream,
                ConsumerConfig(
                    durable_name=settings.consumer_name,
                    filter_subject=f"{settings.subject_prefix}.>",
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=settings.ingest_ack_wait,
                    max_deliver=-1,
                    # Caps the messages delivered and not yet acked, across every instance.
                    max_ack_pending=max(20_000, settings.batch_size * 4),
                ),
            )
        else:
            if info.config.ack_wait is None or abs(info.config.ack_wait - settings.ingest_ack_wait) > 1e-3:
                # ack_wait may be changed on a durable consumer (the server takes the same
                # config with it changed as an update). Every instance should have the same
                # setting: the last one started wins.
                config = info.config
                config.ack_wait = settings.ingest_ack_wait
                info = await js.add_consumer(settings.connections_stream, config)
        return min(settings.ingest_ack_wait, info.config.ack_wait or settings.ingest_ack_wait)

    async def _prepare(self, messages: list[Msg]) -> Prepared:
        received = now_ms()
        batch = [Incoming(m.data, received, "nats", m.subject, m.headers, m.reply) for m in messages]
        return await self._until_done(lambda: self.pipeline.prepare(batch))

    async def _until_done(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run a step of the pipeline until the database lets it through. Meanwhile the batch
        stays in hand, nothing of it acked and nothing lost, and told "in progress"."""
        delay = 0.2
        while True:
            try:
                return await step()
            except TransientError as error:
                log.warning("ledger unavailable, retrying in %.1f s: %s", delay, error)
                if self.pipeline.metrics is not None:
                    self.pipeline.metrics.transient_failures.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _finish(self, messages: list[Msg], prepared: Prepared) -> None:
        """Commit a prepared batch, then tell, publish its rejections, and ack it."""
        try:
            await self._commit_and_ack(messages, prepared)
        finally:
            self._in_hand.pop(id(messages), None)

    async def _commit_and_ack(self, messages: list[Msg], prepared: Prepared) -> None:
        result = await self._until_done(lambda: self.pipeline.commit(prepared))
        self.committed.ring()
        # The batch is committed, its rejections stored with it. What follows are notices: a
        # failure to publish one (the connection closed or reconnecting with its buffer full)
        # is counted and logged, and the batch is acknowledged all the same. Raising here would
        # stop ingest and leave the batch unacknowledged, to be delivered and committed again.
        if result.head > self._announced:
            # Other processes (the relay's, other instances') read the ledger on this at once.
            self._announced = result.head
            try:
                await announce_head(self.nc, result.head)
            except Exception as error:
                self._publish_failed("head", 1, error)
        failed, last_error = 0, None
        for outcome in result.outcomes:
            if isinstance(outcome, Rejected):
                try:
                    await self._tell_rejected(outcome)
                except Exception as error:
                    failed, last_error = failed + 1, error
        if last_error is not None:
            self._publish_failed("rejected", failed, last_error)
        # Committed: now, and only now, the messages may be acknowledged. A copy of an event
        # whose hooks another instance is running was not appended (pipeline/batches.py): it is handed
        # back, to come again once that instance has appended the event, as a duplicate.
        if any(type(outcome) is Deferred for outcome in result.outcomes):
            pairs = list(zip(messages, result.outcomes, strict=True))
            await ack_all(self.nc, [m for m, outcome in pairs if type(outcome) is not Deferred])
            for message, outcome in pairs:
                if type(outcome) is Deferred:
                    await message.nak(delay=DEFERRED_REDELIVERY_SECONDS)
        else:
            await ack_all(self.nc, messages)
        self.batches += 1
        self.messages += len(messages)
        if self.pipeline.metrics is not None:
            self.pipeline.metrics.ingest_batches.inc()
            self.pipeline.metrics.ingest_messages.inc(len(messages))

    def _publish_failed(self, notice: str, count: int, error: Exception) -> None:
        """Count and log notices that could not be published (one line for a batch's)."""
        if self.pipeline.metrics is not None:
            self.pipeline.metrics.publish_failures.labels(notice).inc(count)
        subject = HEAD if notice == "head" else REJECTED
        log.warning(
            "%d %s notice(s) not published on %s, the batch is acknowledged all the same: %s: %s",
            count,
            notice,
            subject,
            type(error).__name__,
            error,
        )

    async def _tell_rejected(self, outcome: Rejected) -> None:
        """Publish a stored rejection on `ledger.rejected.<code>`, the original bytes as the body.

        The stream takes a message up to the server's payload limit, and this one carries
        headers besides: a body too near the limit would make the server close the connection,
        and the batch would never be acknowledged (then redelivered, rejected again, forever).
        Such a body is cut to fit and the cut is said in a header; it is stored whole."""
        headers = {
            HEADER_REJECT_CODE: outcome.code.value,
            HEADER_REJECT_MESSAGE: _header_value(outcome.message),
            HEADER_SUBJECT: outcome.subject or "",
        }
        raw = outcome.raw
        framing = sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())  # "k: v\r\n"
        room = self.nc.max_payload - HEADERS_ALLOWANCE - framing
        if len(raw) > room:
            headers[HEADER_RAW_TRUNCATED] = str(len(raw))
            raw = raw[: max(0, room)]
        await self.nc.publish(rejected_subject(outcome.code.value), raw, headers=headers)

    def stop(self) -> None:
        self.stopping.set()
