"""Publishing a batch of messages to one JetStream stream and knowing every one of them stored.

A batch is published in one of two ways:

- **Chained** (the usual way, once the stream's last message is known to be ours): every
  message carries `Nats-Expected-Last-Msg-Id`, the id of the message before it (for the first,
  the last message of the batch before), and only the batch's last message asks for a reply.
  The stream stores a message only when its last message is the one named, so a batch is
  stored as a chain: when the last message is acknowledged as stored (not as a duplicate), the
  one before it was the stream's last just then, and so on back to the first (a duplicate
  among them was stored before, by an earlier publish of the same records in the same order).
  A refusal, or another publisher's message in between, breaks the chain: nothing after it
  is stored, the last message is refused, and the batch goes again, message by message. The
  stream sends no reply for the others: for 100,000 messages, measured, nats-server took
  0.51 s of CPU instead of 0.72 s with a reply each, and the publishing client 0.40 s
  instead of 0.63 s. (Chaining on the expected last *sequence* would not do: another
  publisher's message in between and a refused one of ours add up to the same sequence.)
- **One acknowledgement a message**: while the stream's last message is not known (the first
  batch, and after a chain broke), and for good once chains keep breaking (CHAIN_GIVE_UP in a
  row: another publisher on the stream, or a server that cannot check the chain while messages
  are in flight). A batch succeeds when every message of it was acknowledged (stored, or a
  duplicate within the stream's window, which is as good: the same Nats-Msg-Id was stored). When
  none was a duplicate, the batch's last message is the stream's last, and the next batch is
  chained on it.

Either way, a batch that raises was not (wholly) stored: the caller publishes it again, and
JetStream's deduplication (Nats-Msg-Id) absorbs what had been stored.

The messages' commands are written into nats-py's pending-output queue a slice at a time
(`_send_command`, `_flush_pending`, as its `publish` does) instead of one `publish` call each,
which costs 3-4 us a message in checks and header encoding: subjects and message ids come from
the ledger, whose rules keep them valid (service/events.py). The version is pinned in
requirements.lock, and every relay test publishes through here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, MaxPayloadError, OutboundBufferLimitError

__all__ = ["AckedPublisher", "PublishFailed"]

log = logging.getLogger(__name__)

# Messages written to the output queue between two turns of the event loop.
SLICE = 500
# Chains broken in a row after which a publisher acknowledges every message.
CHAIN_GIVE_UP = 3


class PublishFailed(Exception):
    """JetStream refused a message of the batch (its error reply is the message)."""


class AckedPublisher:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._batch = 0
        self._waiting = 0
        self._error: str | None = None
        self._duplicates = 0
        self._final = ""  # the reply subject of the batch's last message
        self._final_reply = b""
        self._done: asyncio.Future[None] | None = None
        # The id of the stream's last message, when it is ours: the next batch is chained on it.
        self._chain_after: str | None = None
        self._broken_in_a_row = 0
        self.chained = 0  # batches confirmed by one acknowledgement
        self.broken = 0  # chained batches that were published again, one acknowledgement each

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox() + "."
        self._subscription = await self.nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def _on_ack(self, message: Msg) -> None:
        # Replies are "<prefix><batch>-<n>": one of an earlier, abandoned batch is ignored.
        batch, _, _ = message.subject[len(self._prefix) :].partition("-")
        if batch != str(self._batch) or self._done is None:
            return
        data = message.data
        if not data.startswith(b'{"stream"'):
            if self._error is None:
                self._error = _error_of(data, message)
        elif b'"duplicate"' in data:
            self._duplicates += 1
        if message.subject == self._final:
            self._final_reply = data
        self._waiting -= 1
        if (self._waiting == 0 or self._error is not None) and not self._done.done():
            self._done.set_result(None)

    async def publish(self, messages: Sequence[tuple[str, bytes, str]], timeout: float) -> None:  # noqa: ASYNC109 - a batch has one deadline
        """Publish (subject, payload, Nats-Msg-Id) messages in order and return once JetStream
        stored every one; PublishFailed or TimeoutError otherwise."""
        if not messages:
            return
        assert self._subscription is not None, "start() first"
        after, self._chain_after = self._chain_after, None  # known again once this batch is stored
        if after is not None:
            error, reply = await self._send(messages, timeout, chain_after=after)
            if error is None and reply.startswith(b'{"stream"') and b'"duplicate"' not in reply:
                self.chained += 1
                self._broken_in_a_row = 0
                self._chain_after = messages[-1][2]
                return
            # Not wholly stored (another publisher's message in between, most likely): again,
            # one acknowledgement a message.
            self.broken += 1
            self._broken_in_a_row += 1
            log.debug("chained publish broke (%s); publishing the batch again", error or reply[:200])
            if self._broken_in_a_row == CHAIN_GIVE_UP:
                log.warning(
                    "%d chained publishes in a row broke (another publisher on the stream?); "
                    "acknowledging every message from now on",
                    CHAIN_GIVE_UP,
                )
        error, _ = await self._send(messages, timeout, chain_after=None)
        if error is not None:
            raise PublishFailed(error)
        if self._duplicates == 0 and self._broken_in_a_row < CHAIN_GIVE_UP:
            self._chain_after = messages[-1][2]  # stored last: the stream's last message

    async def _send(
        self, messages: Sequence[tuple[str, bytes, str]], seconds: float, *, chain_after: str | None
    ) -> tuple[str | None, bytes]:
        """Write the batch's commands and wait for its replies: the last message's only when
        chained, every message's otherwise. Returns the first error replied, if any, and the
        last message's reply."""
        nc = self.nc
        if nc.is_closed:
            raise ConnectionClosedError
        self._batch += 1
        self._waiting = 1 if chain_after is not None else len(messages)
        self._error = None
        self._duplicates = 0
        last = len(messages) - 1
        self._final = f"{self._prefix}{self._batch}-{last}"
        self._final_reply = b""
        self._done = asyncio.get_running_loop().create_future()
        reply = f"{self._prefix}{self._batch}-".encode()
        max_payload = nc.max_payload
        try:
            for first in range(0, len(messages), SLICE):
                commands = []
                for n in range(first, min(first + SLICE, len(messages))):
                    subject, payload, msg_id = messages[n]
                    if len(payload) > max_payload:
                        raise MaxPayloadError
                    if chain_after is None:
                        head = b"NATS/1.0\r\nNats-Msg-Id: %b\r\n\r\n" % msg_id.encode()
                        to = b" %b%d" % (reply, n)
                    else:
                        head = b"NATS/1.0\r\nNats-Msg-Id: %b\r\nNats-Expected-Last-Msg-Id: %b\r\n\r\n" % (
                            msg_id.encode(),
                            (messages[n - 1][2] if n else chain_after).encode(),
                        )
                        to = b" %b%d" % (reply, n) if n == last else b""
                    commands.append(
                        b"HPUB %b%b %d %d\r\n%b%b\r\n"
                        % (subject.encode(), to, len(head), len(head) + len(payload), head, payload)
                    )
                command = b"".join(commands)
                if not nc.is_connected and len(command) + nc._pending_data_size > nc._max_pending_size:
                    # Reconnecting, and the client's buffer for that is full (as `publish`).
                    raise OutboundBufferLimitError
                await nc._send_command(command)
                await nc._flush_pending()
                await asyncio.sleep(0)  # let the replies already back (and everyone else) through
            await asyncio.wait_for(asyncio.shield(self._done), seconds)
        finally:
            self._done = None
        return self._error, self._final_reply

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None


def _error_of(data: bytes, message: Msg) -> str | None:
    """What went wrong, from a reply that is not the usual `{"stream": ...}`; None when it is a
    success after all (fields in another order)."""
    if not data and message.headers and message.headers.get("Status") == "503":
        return "no stream takes this subject (503 no responders)"
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        return f"unexpected reply {data[:200]!r}"
    if not isinstance(reply, dict):
        return f"unexpected reply {data[:200]!r}"
    error = reply.get("error")
    if error is None and "stream" in reply:
        return None
    if not isinstance(error, dict):
        return f"unexpected reply {data[:200]!r}"
    return f"JetStream error {error.get('code')}: {error.get('description')}"
