"""Publishing a batch of messages to JetStream and waiting for every acknowledgement.

nats-py's `publish_async` does this one message at a time: a random token from os.urandom, a
semaphore acquired through `wait_for`, a future with a callback, and a full JSON parse of each
PubAck into a dataclass. For the relay, which publishes every record of the ledger, that was
most of its CPU. Here a batch shares one wildcard inbox subscription, replies are numbered by
a counter, and an acknowledgement is only looked at closely when it is not a plain success.

A batch succeeds when every message of it was acknowledged by the stream (stored, or a
duplicate within the stream's window, which is as good: the same Nats-Msg-Id was stored). Any
error reply, or a missing reply at the timeout, fails the batch: the caller publishes it again,
and JetStream's deduplication absorbs what had been stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["AckedPublisher", "PublishFailed"]


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
        self._done: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox() + "."
        self._subscription = await self.nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def _on_ack(self, message: Msg) -> None:
        # Replies are "<prefix><batch>-<n>": one of an earlier, abandoned batch is ignored.
        batch, _, _ = message.subject[len(self._prefix) :].partition("-")
        if batch != str(self._batch) or self._done is None:
            return
        data = message.data
        if not data.startswith(b'{"stream"') and self._error is None:
            self._error = _error_of(data, message)
        self._waiting -= 1
        if (self._waiting == 0 or self._error is not None) and not self._done.done():
            self._done.set_result(None)

    async def publish(self, messages: Sequence[tuple[str, bytes, str]], timeout: float) -> None:  # noqa: ASYNC109 - a batch has one deadline
        """Publish (subject, payload, Nats-Msg-Id) messages in order and return once JetStream
        acknowledged every one; PublishFailed or TimeoutError otherwise."""
        if not messages:
            return
        assert self._subscription is not None, "start() first"
        self._batch += 1
        self._waiting = len(messages)
        self._error = None
        self._done = asyncio.get_running_loop().create_future()
        reply = f"{self._prefix}{self._batch}-"
        publish = self.nc.publish
        for n, (subject, payload, msg_id) in enumerate(messages):
            await publish(subject, payload, reply=f"{reply}{n}", headers={"Nats-Msg-Id": msg_id})
            if n % 100 == 99:
                await asyncio.sleep(0)  # let the acks already back (and everyone else) through
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        finally:
            self._done = None
        if self._error is not None:
            raise PublishFailed(self._error)

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
