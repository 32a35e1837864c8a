"""Publishing a batch of messages to one JetStream stream and knowing every one of them stored,
in order: a message is stored only after the one before it, so that when one is refused none
after it is stored (the stream stays in the batch's order).

Every message but the first of a batch carries `Nats-Expected-Last-Msg-Id`, the id of the
message before it: the stream stores a message only when its last message is the one named.
(A duplicate, a Nats-Msg-Id stored within the stream's duplicate window, is acknowledged as
such before that check, and stored nothing.) So when a message is refused, for whatever
reason, the next one names a message the stream does not have as its last and is refused too,
and so on to the end of the batch. The batch goes one of two ways:

- **Chained** (the usual way, once the stream's last message is known to be ours): the first
  message names the last of the batch before, and only the batch's last message asks for a
  reply. When it is acknowledged as stored (not as a duplicate), the one before it was the
  stream's last just then, and so on back to the first (a duplicate among them was stored
  before, by an earlier publish of the same records in the same order). A refusal, or another
  publisher's message in between, breaks the chain: nothing after it is stored, the last
  message is refused, and the batch goes again, one acknowledgement a message. The stream
  sends no reply for the others: for 100,000 messages, measured, nats-server took 0.51 s of
  CPU instead of 0.72 s with a reply each, and the publishing client 0.40 s instead of 0.63 s.
  (Chaining on the expected last *sequence* would not do: another publisher's message in
  between and a refused one of ours add up to the same sequence.)
- **One acknowledgement a message**: while the stream's last message is not known (the first
  batch, and after a chain broke), and for good once chains keep breaking (CHAIN_GIVE_UP in a
  row: another publisher on the stream, or a server that cannot check the chain while messages
  are in flight). The first message names nothing (the stream's last is not known; the
  caller's previous message is stored, which is what matters), the others still name the one
  before them, and every message is answered, so the first refusal is known. When it says that
  another message came between two of ours ("wrong last msg ID"), the batch goes on from the
  refused message, naming nothing again; each such round stores at least one message. Any other
  refusal ends the publish: PublishFailed says how many of the batch's messages are stored (all
  before the refused one, none after it), and whether publishing it again can help (not for a
  message larger than the stream or the server takes). A batch succeeds when every message was
  acknowledged (stored, or a duplicate, which is as good: the same Nats-Msg-Id was stored);
  when none was a duplicate, the batch's last message is the stream's last, and the next batch
  is chained on it.

A batch that raises was not (wholly) stored: the caller publishes the rest again, and
JetStream's deduplication (Nats-Msg-Id) absorbs what had been stored.

The messages' commands are written into nats-py's pending-output queue a slice at a time
(as its `publish` does, through service/driver_internals.py) instead of one `publish` call each,
which costs checks and header encoding per message: subjects and message ids come from
the ledger, whose rules keep them valid (service/events.py). The nats-py versions this was
written for are checked at start-up, and every relay test publishes through here.

Why raw nats-py and not a FastStream publisher (`broker.publish(..., stream=)`, declared for the
document in service/nats/application.py): FastStream awaits a PubAck per message, which is what
keeps the order without chaining, and took 4,140 records/s where this took 124,700, 30x
(medians of 3 runs of
`.venv/bin/python bench/faststream_vs_raw.py --messages 30000 --requests 3000 --repeat 3`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, OutboundBufferLimitError

from service.driver_internals import outbound_buffer_full, queue_commands
from service.subjects import HEADER_EXPECTED_LAST_MSG_ID, HEADER_MSG_ID, STREAM_LEADER_ELECTED

__all__ = ["AckedPublisher", "PublishFailed", "StreamUnavailable"]

log = logging.getLogger(__name__)

# Messages written to the output queue between two turns of the event loop.
SLICE = 500
# Chains broken in a row after which a publisher acknowledges every message.
CHAIN_GIVE_UP = 3
# JetStream's err_code of "wrong last msg ID": the message named as the stream's last is not.
WRONG_LAST_MSG_ID = 10070
# Refusals that the same message meets again however often it is published: larger than the
# stream's max_msg_size (10054), headers larger than the server takes (10097).
REFUSED_FOR_GOOD = frozenset({10054, 10097})
# "JetStream system temporarily unavailable": a stream or meta leader election in progress.
TEMPORARILY_UNAVAILABLE = 10008
# How often a batch waiting for its replies looks whether the connection was re-established.
WATCH_SECONDS = 0.25


class PublishFailed(Exception):
    """A message of the batch was not stored (the reason is the exception's message): the
    `stored` messages before it are, none after it. `for_good` when publishing that message
    again cannot help."""

    def __init__(self, reason: str, *, stored: int, for_good: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stored = stored
        self.for_good = for_good


class StreamUnavailable(PublishFailed):
    """The stream could not take the batch just now: no leader (an election after a node died),
    or the batch's replies lost with a connection or a leader. The `stored` messages before the
    first not known to be stored are; publishing the rest again with the same Nats-Msg-Ids,
    once the stream has a leader, stores each once. `no_responders`: the stream's reply was
    "no responders", which is also what a stream that does not take the subject answers."""

    def __init__(self, reason: str, *, stored: int, no_responders: bool = False) -> None:
        super().__init__(reason, stored=stored)
        self.no_responders = no_responders


@dataclass(frozen=True, slots=True)
class _Refusal:
    index: int  # in the messages sent
    reason: str
    code: int | None  # JetStream's err_code, when it gave one
    unavailable: bool = False  # no leader to take it just now: it may be taken later


class AckedPublisher:
    def __init__(self, nc: Client, stream: str | None = None) -> None:
        self.nc = nc
        # The stream published to: a leader elected for it ends the wait for a batch's replies
        # at once, rather than at its timeout (what the old leader had not replied to, it never
        # will).
        self.stream = stream
        self._advisories: Subscription | None = None
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._batch = 0
        self._waiting = 0
        self._refusal: _Refusal | None = None
        self._duplicates = 0
        self._final = ""  # the reply subject of the batch's last message
        self._final_reply = b""
        self._done: asyncio.Future[None] | None = None
        # The id of the stream's last message, when it is ours: the next batch is chained on it.
        self._chain_after: str | None = None
        self._broken_in_a_row = 0
        self.chained = 0  # batches confirmed by one acknowledgement
        self.broken = 0  # chained batches that were published again, one acknowledgement each
        self.resumed = 0  # times a batch went on after another message came between two of ours

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox() + "."
        self._subscription = await self.nc.subscribe(self._prefix + "*", cb=self._on_ack)
        if self.stream is not None:
            self._advisories = await self.nc.subscribe(
                STREAM_LEADER_ELECTED.format(stream=self.stream), cb=self._on_leader_elected
            )

    async def _on_leader_elected(self, _: Msg) -> None:
        self.interrupt(f"the stream {self.stream} elected a new leader while a batch was in flight")

    def interrupt(self, reason: str) -> None:
        """End the wait for the batch in flight: it fails with StreamUnavailable."""
        if self._done is not None and not self._done.done():
            self._done.set_exception(StreamUnavailable(reason, stored=0))

    async def _on_ack(self, message: Msg) -> None:
        # Replies are "<prefix><batch>-<n>": one of an earlier, abandoned batch is ignored.
        batch, _, n = message.subject[len(self._prefix) :].partition("-")
        if batch != str(self._batch) or self._done is None:
            return
        data = message.data
        if not data.startswith(b'{"stream"'):
            refusal = _refusal_of(int(n), data, message)
            # The first refusal in the batch's order, whatever order replies come in (a "no
            # responders" comes at once, before the stream's replies to earlier messages).
            if refusal is not None and (self._refusal is None or refusal.index < self._refusal.index):
                self._refusal = refusal
        elif b'"duplicate"' in data:
            self._duplicates += 1
        if message.subject == self._final:
            self._final_reply = data
        self._waiting -= 1
        if self._waiting == 0 and not self._done.done():
            self._done.set_result(None)

    async def publish(self, messages: Sequence[tuple[str, bytes, str]], timeout: float) -> None:  # noqa: ASYNC109 - a batch has one deadline
        """Publish (subject, payload, Nats-Msg-Id) messages in order and return once JetStream
        stored every one; PublishFailed (how many are stored, none after the one that was not)
        or TimeoutError otherwise."""
        if not messages:
            return
        assert self._subscription is not None, "start() first"
        # A message larger than the server takes must not be sent: the server would close the
        # connection for it. Those before it are published; it is refused for good.
        first_after = self._chain_after or ""
        too_large = _first_too_large(messages, self.nc.max_payload, first_after)
        if too_large is not None:
            if too_large:
                await self.publish(messages[:too_large], timeout)
            size = _size(messages, too_large, first_after)
            raise PublishFailed(
                f"the message is {size} bytes with its headers, more than the NATS server takes "
                f"(max_payload {self.nc.max_payload})",
                stored=too_large,
                for_good=True,
            )
        after, self._chain_after = self._chain_after, None  # known again once this batch is stored
        if after is not None:
            refusal, reply = await self._send(messages, timeout, first_after=after, ack_each=False)
            if refusal is None and reply.startswith(b'{"stream"') and b'"duplicate"' not in reply:
                self.chained += 1
                self._broken_in_a_row = 0
                self._chain_after = messages[-1][2]
                return
            # Not wholly stored (another publisher's message in between, most likely, or a
            # refusal): again, one acknowledgement a message, to learn which.
            self.broken += 1
            self._broken_in_a_row += 1
            log.debug("chained publish broke (%s); publishing the batch again", refusal or reply[:200])
            if self._broken_in_a_row == CHAIN_GIVE_UP:
                log.warning(
                    "%d chained publishes in a row broke (another publisher on the stream?); "
                    "acknowledging every message from now on",
                    CHAIN_GIVE_UP,
                )
        start, duplicates = 0, 0
        while True:
            refusal, _ = await self._send(messages[start:], timeout, first_after=None, ack_each=True)
            duplicates += self._duplicates
            if refusal is None:
                break
            if refusal.code == WRONG_LAST_MSG_ID and refusal.index > 0:
                # Another message came between two of ours (or the server could not tell with
                # messages in flight): those before the refused one are stored, it and those
                # after it are not. On from it, naming nothing: the one before it is stored,
                # which is all that its place in the order needs.
                start += refusal.index
                self.resumed += 1
                continue
            if refusal.unavailable:
                raise StreamUnavailable(
                    refusal.reason, stored=start + refusal.index, no_responders=refusal.code is None
                )
            raise PublishFailed(
                refusal.reason, stored=start + refusal.index, for_good=refusal.code in REFUSED_FOR_GOOD
            )
        if duplicates == 0 and self._broken_in_a_row < CHAIN_GIVE_UP:
            self._chain_after = messages[-1][2]  # stored last: the stream's last message

    async def _send(
        self,
        messages: Sequence[tuple[str, bytes, str]],
        seconds: float,
        *,
        first_after: str | None,
        ack_each: bool,
    ) -> tuple[_Refusal | None, bytes]:
        """Write the batch's commands, each message but the first naming the one before it as
        the stream's last (the first names `first_after`, if given), and wait for the replies:
        every message's when `ack_each`, the last one's only otherwise. Returns the first
        refusal in the batch's order, if any, and the last message's reply."""
        nc = self.nc
        if nc.is_closed:
            raise ConnectionClosedError
        self._batch += 1
        self._waiting = len(messages) if ack_each else 1
        self._refusal = None
        self._duplicates = 0
        last = len(messages) - 1
        self._final = f"{self._prefix}{self._batch}-{last}"
        self._final_reply = b""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        deadline = loop.time() + seconds
        # Replies to what was written before a reconnect are lost with the old connection.
        reconnects = nc.stats["reconnects"]
        reply = f"{self._prefix}{self._batch}-".encode()
        try:
            for first in range(0, len(messages), SLICE):
                commands = []
                for n in range(first, min(first + SLICE, len(messages))):
                    subject, payload, msg_id = messages[n]
                    # Formatted here rather than by `_head`: a call a message costs a tenth of
                    # what the rest of this loop does.
                    named = messages[n - 1][2] if n else first_after
                    if named is None:
                        head = _HEAD % msg_id.encode()
                    else:
                        head = _CHAINED_HEAD % (msg_id.encode(), named.encode())
                    to = b" %b%d" % (reply, n) if ack_each or n == last else b""
                    commands.append(
                        b"HPUB %b%b %d %d\r\n%b%b\r\n"
                        % (subject.encode(), to, len(head), len(head) + len(payload), head, payload)
                    )
                command = b"".join(commands)
                if outbound_buffer_full(nc, len(command)):
                    # Reconnecting, and the client's buffer for that is full (as `publish`).
                    raise OutboundBufferLimitError
                await queue_commands(nc, command)
                await asyncio.sleep(0)  # let the replies already back (and everyone else) through
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                try:
                    await asyncio.wait_for(asyncio.shield(self._done), min(remaining, WATCH_SECONDS))
                    break
                except TimeoutError:
                    # Replies to what was written before a disconnect never come: no need to
                    # wait them out (nor to hold a draining relay up for them).
                    if not nc.is_connected or nc.stats["reconnects"] != reconnects:
                        raise StreamUnavailable(
                            "the NATS connection was lost while a batch was in flight", stored=0
                        ) from None
        finally:
            self._done = None
        return self._refusal, self._final_reply

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        if self._advisories is not None:
            await self._advisories.unsubscribe()
            self._advisories = None


# Header blocks, written as the protocol has them (HPUB).
_HEAD = b"NATS/1.0\r\n%s: %%b\r\n\r\n" % HEADER_MSG_ID.encode()
_CHAINED_HEAD = b"NATS/1.0\r\n%s: %%b\r\n%s: %%b\r\n\r\n" % (
    HEADER_MSG_ID.encode(),
    HEADER_EXPECTED_LAST_MSG_ID.encode(),
)


def _head(msg_id: str, after: str | None) -> bytes:
    """The headers of a message, naming `after` as the stream's last message, if given."""
    if after is None:
        return _HEAD % msg_id.encode()
    return _CHAINED_HEAD % (msg_id.encode(), after.encode())


def _size(messages: Sequence[tuple[str, bytes, str]], n: int, first_after: str) -> int:
    """The most message n of a batch takes on the wire, headers and payload: it names the
    message before it, or, first of a batch, `first_after` (or nothing)."""
    _, payload, msg_id = messages[n]
    return len(_head(msg_id, messages[n - 1][2] if n else first_after)) + len(payload)


_HEAD_OVERHEAD = len(_head("", ""))
_PAYLOAD, _MSG_ID = itemgetter(1), itemgetter(2)


def _first_too_large(
    messages: Sequence[tuple[str, bytes, str]], max_payload: int, first_after: str
) -> int | None:
    """The index of the first message larger than the server takes, if any."""
    # Batches are far below the limit: a pass over lengths, and headers built only past it.
    largest = max(map(len, map(_PAYLOAD, messages)))
    longest = max(len(first_after), max(map(len, map(_MSG_ID, messages))))
    if largest + 2 * longest + _HEAD_OVERHEAD <= max_payload:
        return None
    return next((n for n in range(len(messages)) if _size(messages, n, first_after) > max_payload), None)


def _refusal_of(index: int, data: bytes, message: Msg) -> _Refusal | None:
    """What went wrong, from a reply that is not the usual `{"stream": ...}`; None when it is a
    success after all (fields in another order)."""
    if not data and message.headers and message.headers.get("Status") == "503":
        # No stream, or a stream with no leader just now (an election): the same reply.
        return _Refusal(index, "no stream takes this subject now (503 no responders)", None, unavailable=True)
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _Refusal(index, f"unexpected reply {data[:200]!r}", None)
    if not isinstance(reply, dict):
        return _Refusal(index, f"unexpected reply {data[:200]!r}", None)
    error = reply.get("error")
    if error is None and "stream" in reply:
        return None
    if not isinstance(error, dict):
        return _Refusal(index, f"unexpected reply {data[:200]!r}", None)
    code = error.get("err_code")
    code = code if isinstance(code, int) else None
    return _Refusal(
        index,
        f"JetStream error {code or error.get('code')}: {error.get('description')}",
        code,
        unavailable=code == TEMPORARILY_UNAVAILABLE,
    )
