"""Publishing accepted events into the CONNECTIONS stream (for the HTTP edge): the request is
answered only after JetStream acknowledged every message of it.

On a JetStream cluster, a node's death leaves the stream without a leader for the seconds of an
election: publishes meet "no responders" or no answer at all. The messages not acknowledged are
published again, after short pauses, until PUBLISH_SECONDS have passed; only then is the sender
told 503 (with Retry-After, by the HTTP edge). Each message carries a `Nats-Msg-Id` made from
its bytes, so that a message stored by a leader whose acknowledgement was lost, and published
again, is stored once. The id is the content's and not the event's: another body with the same
event id must still reach the ledger, whose `conflict` rejection would otherwise never be seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from service.errors import TransientError
from service.subjects import HEADER_MSG_ID

__all__ = ["EventPublisher", "content_id"]

log = logging.getLogger(__name__)

# JetStream acknowledges in milliseconds; past this, a try is given up and made again.
ACK_TIMEOUT = 5.0
# How long a request waits, at most, for the stream to take its events: longer than an election
# takes, shorter than an HTTP client's patience.
PUBLISH_SECONDS = 15.0
# The pauses between tries, in a row; the last one repeats.
RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0)
# How long a request waits for the client to reconnect (to another server of the cluster).
RECONNECT_GRACE = 1.0
# "JetStream system temporarily unavailable": an election in progress.
TEMPORARILY_UNAVAILABLE = 10008


def content_id(body: bytes) -> str:
    """The Nats-Msg-Id of an event published from HTTP: its bytes' digest."""
    return "http-" + hashlib.blake2b(body, digest_size=16).hexdigest()


def _retryable(error: BaseException) -> bool:
    if isinstance(error, nats.js.errors.APIError):
        # Other refusals (a message larger than the stream takes, say) come again however
        # often the message is published.
        return error.err_code == TEMPORARILY_UNAVAILABLE or error.code == 503
    return isinstance(error, (nats.errors.Error, TimeoutError, OSError))


class EventPublisher:
    def __init__(self, nc: Client, publish_seconds: float = PUBLISH_SECONDS) -> None:
        self.nc = nc
        self.publish_seconds = publish_seconds
        self.js = nc.jetstream()

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish (subject, body) pairs; raises TransientError unless all were acknowledged
        within `publish_seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_seconds
        waiting = [(subject, body, {HEADER_MSG_ID: content_id(body)}) for subject, body in messages]
        tries = 0
        while True:
            if not self.nc.is_connected and not await self._reconnected(deadline):
                # nats-py would hold the messages until it reconnects: a sender is better told at
                # once when NATS is gone, not only switching servers.
                raise TransientError("NATS is not connected; try again shortly")
            waiting, error = await self._try(waiting, max(0.1, min(ACK_TIMEOUT, deadline - loop.time())))
            if not waiting:
                return
            assert error is not None
            if not _retryable(error) or loop.time() >= deadline:
                raise TransientError(
                    f"NATS did not acknowledge {len(waiting)} of {len(messages)} events: "
                    f"{type(error).__name__}: {error}; try again shortly (an event sent twice is "
                    "recorded once)"
                ) from error
            pause = RETRY_SECONDS[min(tries, len(RETRY_SECONDS) - 1)]
            tries += 1
            log.debug("publish: %s; %d events again in %.2f s", error, len(waiting), pause)
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))

    async def _reconnected(self, deadline: float) -> bool:
        """Whether the client is connected again within RECONNECT_GRACE (a node died and the
        client moves to another, which takes milliseconds)."""
        loop = asyncio.get_running_loop()
        until = min(deadline, loop.time() + RECONNECT_GRACE)
        while loop.time() < until:
            await asyncio.sleep(0.05)
            if self.nc.is_connected:
                return True
        return False

    async def _try(
        self, messages: list[tuple[str, bytes, dict[str, str]]], seconds: float
    ) -> tuple[list[tuple[str, bytes, dict[str, str]]], BaseException | None]:
        """One try: the messages not acknowledged, and why (the first failure)."""
        # `publish` rather than `publish_async`: nats-py's asynchronous acknowledgement handler
        # raises on a JetStream error reply instead of failing the message's future, which would
        # then wait out its timeout.
        results = await asyncio.gather(
            *(
                self.js.publish(subject, body, timeout=seconds, headers=headers)
                for subject, body, headers in messages
            ),
            return_exceptions=True,
        )
        failed: list[tuple[str, bytes, dict[str, str]]] = []
        first: BaseException | None = None
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                failed.append(message)
                first = first or result
        return failed, first
