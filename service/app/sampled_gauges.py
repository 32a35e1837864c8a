"""Gauges that are sampled rather than counted: the ledger head, the relay's lag behind it, and
how many messages wait in the CONNECTIONS consumer (across every instance)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client

from service.ledger.checkpoints import read_checkpoint
from service.nats.relay import RELAY_CHECKPOINT, Relay
from service.pipeline.ledger_service import LedgerService

__all__ = ["sample_forever"]

log = logging.getLogger(__name__)
INTERVAL = 5.0


async def sample_forever(
    nc: Client, ledger: LedgerService, relay: Relay | None, stopping: asyncio.Event
) -> None:
    settings, metrics = ledger.settings, ledger.metrics
    js = nc.jetstream()
    while not stopping.is_set():
        try:
            head = await ledger.queries.head()
            # The checkpoint trails what JetStream acknowledged by up to a second or so; when
            # the relay runs in this process, its own position is the exact figure.
            relayed = await read_checkpoint(ledger.store.engine, RELAY_CHECKPOINT)
            if relay is not None:
                relayed = max(relayed, relay.position)
            metrics.head.set(head)
            metrics.relayed.set(relayed)
            metrics.relay_lag.set(max(0, head - relayed))
            info = await js.consumer_info(settings.connections_stream, settings.consumer_name)
            metrics.consumer_pending.set(info.num_pending or 0)
        except Exception as error:  # a gauge may go stale; the service must not stop for it
            log.debug("sampling failed: %s", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), INTERVAL)
