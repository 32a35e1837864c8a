"""Publishing accepted events into the CONNECTIONS stream (for the HTTP edge): the request is
answered only after JetStream acknowledged every message of it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client

from service.errors import TransientError

__all__ = ["EventPublisher"]

ACK_TIMEOUT = 10.0


class EventPublisher:
    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish (subject, body) pairs; raises TransientError unless all were acknowledged."""
        js = self.nc.jetstream()
        try:
            futures = [await js.publish_async(subject, body) for subject, body in messages]
            await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT)
        except (nats.errors.Error, TimeoutError, OSError) as error:
            raise TransientError(f"NATS did not acknowledge: {type(error).__name__}: {error}") from error
