"""Publishing accepted events into the CONNECTIONS stream (for the HTTP edge): the request is
answered only after JetStream acknowledged every message of it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client

from service.errors import TransientError

__all__ = ["EventPublisher"]

# JetStream acknowledges in milliseconds; a client waits for the answer, so a stream that says
# nothing within this is reported as unavailable (503) rather than held open.
ACK_TIMEOUT = 5.0


class EventPublisher:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        # One JetStream context for the process: each context subscribes an inbox of its own
        # for the acknowledgements of its asynchronous publishes, and keeps it until the end.
        self.js = nc.jetstream()

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish (subject, body) pairs; raises TransientError unless all were acknowledged."""
        if not self.nc.is_connected:
            # nats-py would hold the messages until it reconnects; the sender is better told at
            # once, and may try again (an event sent twice is recorded once).
            raise TransientError("NATS is not connected; try again shortly")
        try:
            futures = [await self.js.publish_async(subject, body) for subject, body in messages]
            await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT)
        except (nats.errors.Error, TimeoutError, OSError) as error:
            raise TransientError(f"NATS did not acknowledge: {type(error).__name__}: {error}") from error
