"""A continuous pull from a JetStream durable consumer: messages flow into a buffer while the
batch before them is appended, and the ingest loop takes what has arrived.

nats-py's `PullSubscription.fetch` waits for each message with a task, a timer and a random
uuid of its own (a third of the ingest loop's CPU per message, measured), and a fetch that
returns early leaves whatever arrives next for the fetch after. This speaks the pull protocol
itself, on a plain subscription to an inbox of ours:

- one pull request is open at a time (up to REQUEST_SIZE messages, expiring after `expires`);
  when it is fulfilled or ends (408 expired, 409 and the like), the next is sent at once,
  unless `batch` messages already wait in the buffer (at most two batches are held
  unacknowledged). Requests larger than that made messages wait longer under a light load
  (measured: p99 publish-to-record 170 ms with requests of 2,000, 86 ms with 500);
- bytes are bounded as well as messages (`ByteBudget`, from LEDGER_INGEST_MAX_BYTES): each
  request carries `max_bytes`, the budget less what waits in the buffer, so what has arrived and
  what the open request may still bring never exceed it; and a batch taken holds at most its
  share. The server counts a message as its subject, reply subject, headers and body. A request
  for fewer bytes than the next message is answered "409 Message Size Exceeds MaxBytes" without
  it; so a request is sent only with room for the largest message the stream takes, and when
  that 409 comes after some messages it is simply the end of the request. When it comes with
  none (a message larger than the stream's limit, stored before the limit was set), that message
  is asked for alone with as many bytes as the server lets a message have (doubled if need be):
  once, past the budget, rather than never;
- a request that is never answered (its reply lost across a reconnect) counts as ended once
  its expiry has passed by a margin, and a new one is sent; on a cluster, when the consumer
  elects a new leader (its advisory), at once: the old leader, dead, will not answer;
- `close` stops asking, waits for the open request to end, and hands back what is buffered,
  so that a draining service acknowledges everything it was given and leaves nothing in flight.

Acknowledgement is the caller's: each message's `ack()` after its commit, as before.

Why raw nats-py and not FastStream's pull subscriber: ingest owns its acknowledgement (after the
commit, in one write: acks.py) and its in-progress notices, which a FastStream handler would
leave to the framework message by message; and it is faster. Over the stream broker's own
connection (service/nats/application.py), this feed with `ack_all` took 106,600 messages/s where
a FastStream pull subscriber (batch=True, batch_size 500, FastStream's acks) took 20,900, on the
same server and messages, 5.1x (medians of 3 runs of
`.venv/bin/python bench/faststream_vs_raw.py --messages 30000 --requests 3000 --repeat 3`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from service.settings import MESSAGE_OVERHEAD, Settings
from service.subjects import CONSUMER_LEADER_ELECTED

__all__ = ["ByteBudget", "PullFeed"]

log = logging.getLogger(__name__)

STATUS = "Status"
HEARTBEAT = "100"
LOST_REQUEST_MARGIN = 2.0
REQUEST_SIZE = 500
REFUSED_PAUSE = 0.5
TOO_LARGE = "Message Size Exceeds MaxBytes"
BATCH_COMPLETED = "Batch Completed"


@dataclass(frozen=True, slots=True)
class ByteBudget:
    """Bytes of delivered, unacknowledged messages, as the server counts them in max_bytes."""

    # What has arrived and not been taken, plus what the open request may still bring.
    feed: int
    # One batch taken (at least one message, whatever its size).
    batch: int
    # The most one message of the stream counts for: no request asks for less.
    largest: int

    @classmethod
    def of(cls, settings: Settings) -> ByteBudget:
        """LEDGER_INGEST_MAX_BYTES: half for the feed, a quarter for each of the two batches in
        hand (one committing, the next prepared); settings.py checks that a quarter holds the
        largest message."""
        return cls(
            feed=settings.ingest_max_bytes // 2,
            batch=settings.ingest_max_bytes // 4,
            largest=settings.stream_max_msg_size + MESSAGE_OVERHEAD,
        )


def _size(message: Msg) -> int:
    """What the server counts a delivered message for in a request's max_bytes (its header
    block estimated from the parsed headers)."""
    size = len(message.data) + len(message.subject) + len(message.reply)
    headers = message.headers
    if headers:
        size += 12 + sum(len(k) + len(v) + 4 for k, v in headers.items())
    return size


class PullFeed:
    def __init__(
        self, nc: Client, stream: str, consumer: str, *, batch: int, expires: float, budget: ByteBudget
    ) -> None:
        self.nc = nc
        self.batch = batch
        self.expires = expires
        self.budget = budget
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._leader_elected = CONSUMER_LEADER_ELECTED.format(stream=stream, consumer=consumer)
        self._advisories: Subscription | None = None
        self._request_size = min(batch, REQUEST_SIZE)
        self._expires_ns = int(expires * 1e9)
        self._buffer: deque[Msg] = deque()
        self._sizes: deque[int] = deque()  # of the buffered messages, in the same order
        self._buffered_bytes = 0
        self._asked_bytes = 0  # the open (or last) request's max_bytes
        self._delivered = 0  # messages the open (or last) request delivered
        self._oversize = 0  # bytes of the next request, for one message past the budget; 0: none
        self._arrived = asyncio.Event()
        self._inbox = ""
        self._subscription: Subscription | None = None
        self._owed = 0  # messages the open request may still deliver; 0: none open
        self._open_until = 0.0
        self._ended = asyncio.Event()
        self._closing = False
        self._quiet_until = 0.0

    @property
    def buffered(self) -> int:
        """Messages that arrived and were not taken yet."""
        return len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        """Their bytes, as the server counts them."""
        return self._buffered_bytes

    def waiting(self) -> list[Msg]:
        """The messages that arrived and were not taken yet (delivered, not acknowledged)."""
        return list(self._buffer)

    async def start(self) -> None:
        self._inbox = self.nc.new_inbox()
        self._subscription = await self.nc.subscribe(self._inbox, cb=self._on_message)
        self._advisories = await self.nc.subscribe(self._leader_elected, cb=self._on_leader_elected)

    async def _on_leader_elected(self, _: Msg) -> None:
        """The consumer has a new leader (on a cluster, after a node died): a request open on the
        old one will never be answered, and need not be waited out."""
        if self._owed > 0 and not self._closing:
            log.info("the consumer elected a new leader: asking it for messages")
            self._owed = 0
            self._ended.set()
            self._quiet_until = 0.0
            await self._ask()

    async def _on_message(self, message: Msg) -> None:
        headers = message.headers
        # A delivery always carries its ack subject ($JS.ACK...) as the reply; a status message
        # of the pull protocol (100 heartbeat, 404, 408, 409) never does. A producer's own
        # headers, a `Status` among them, are its business and ride along with its delivery:
        # telling them apart by the header would leave such an event unacknowledged forever.
        if message.reply:
            size = _size(message)
            self._buffer.append(message)
            self._sizes.append(size)
            self._buffered_bytes += size
            self._delivered += 1
            self._arrived.set()
            self._owed -= 1
            if self._owed > 0:
                return
            self._oversize = 0
        else:
            status = headers.get(STATUS) if headers else None
            if status == HEARTBEAT:
                return
            description = headers.get("Description") if headers else None
            if status == "409" and description == BATCH_COMPLETED:
                # Sent after the last message of a request with max_bytes that got all its
                # messages: that request was over when its last message came, and the one
                # open now is another.
                return
            if status == "409" and description == TOO_LARGE:
                # The request's bytes are used up: its end, as a 408 would be. With nothing
                # delivered, the next message alone is larger than the request (see the
                # module docstring): ask for it alone, with more.
                if self._delivered == 0:
                    self._oversize = max(2 * self._asked_bytes, self.nc.max_payload + MESSAGE_OVERHEAD)
                    log.warning(
                        "a message larger than a pull request of %d bytes waits in the stream (larger "
                        "than LEDGER_STREAM_MAX_MSG_SIZE allows now); asking for it alone with %d "
                        "bytes, past LEDGER_INGEST_MAX_BYTES",
                        self._asked_bytes,
                        self._oversize,
                    )
                else:
                    self._oversize = 0
            else:
                self._oversize = 0
                # 408: the request expired; 409: it was cut short (leadership change, consumer
                # deleted or changed, too many waiting requests); 404: nothing to give. All
                # end it.
                if status != "408":
                    log.debug("pull request ended: %s %s", status, description)
                    # Asking again at once would spin while, say, the consumer is being recreated.
                    self._quiet_until = asyncio.get_running_loop().time() + REFUSED_PAUSE
        self._owed = 0
        self._ended.set()
        await self._ask()

    async def _ask(self) -> None:
        """Open the next pull request when none is open and the buffer has room."""
        loop_time = asyncio.get_running_loop().time()
        if self._owed > 0 and loop_time > self._open_until:
            self._owed = 0  # its end never came (a reconnect ate it): it is over all the same
        if self._closing or self._owed > 0 or len(self._buffer) >= self.batch:
            return
        if loop_time < self._quiet_until:
            return  # take() asks again on its next round
        if self._oversize:
            count, size = 1, self._oversize
        else:
            count, size = self._request_size, self.budget.feed - self._buffered_bytes
            if size < self.budget.largest:
                return  # no room for the largest message yet: take() asks again once it made room
        self._owed, self._asked_bytes, self._delivered = count, size, 0
        self._open_until = loop_time + self.expires + LOST_REQUEST_MARGIN
        self._ended.clear()
        request = orjson.dumps({"batch": count, "expires": self._expires_ns, "max_bytes": size})
        await self.nc.publish(self._next_subject, request, reply=self._inbox)

    async def take(self, timeout: float) -> list[Msg]:  # noqa: ASYNC109 - an empty batch at the timeout
        """Up to `batch` messages, and up to the budget's batch bytes (one at least), that have
        arrived; waits up to `timeout` for the first."""
        await self._ask()
        if not self._buffer:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return []
        buffer, sizes = self._buffer, self._sizes
        count = min(self.batch, len(buffer))
        total = 0
        limit = self.budget.batch
        for taken_so_far, size in enumerate(sizes):
            if taken_so_far == count or (taken_so_far and total + size > limit):
                count = taken_so_far
                break
            total += size
        taken = [buffer.popleft() for _ in range(count)]
        for _ in range(count):
            sizes.popleft()
        self._buffered_bytes -= total
        await self._ask()
        return taken

    async def close(self) -> list[Msg]:
        """Stop asking, let the open request end, and return every message still buffered."""
        self._closing = True
        if self._owed > 0:
            left = self._open_until - asyncio.get_running_loop().time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), max(0.0, left))
        for subscription in (self._subscription, self._advisories):
            if subscription is None:
                continue
            try:
                await subscription.unsubscribe()
            except Exception as error:  # the connection may be gone; redelivery covers the rest
                log.debug("closing the pull inbox failed: %s", error)
        self._subscription = self._advisories = None
        rest = list(self._buffer)
        self._buffer.clear()
        self._sizes.clear()
        self._buffered_bytes = 0
        return rest
