"""`ledger.head`: the ledger's head position, announced on core NATS after each commit that
appended something, by whichever instance committed it.

A hint, at most once: it tells the relay and other instances' in-memory counts to read the
ledger now rather than at their next poll. Nothing depends on receiving it; the ledger itself is
always what they read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from service.subjects import HEAD

__all__ = ["announce_head", "follow_heads"]

log = logging.getLogger(__name__)


async def announce_head(nc: Client, position: int) -> None:
    await nc.publish(HEAD, orjson.dumps({"position": position}))


async def follow_heads(nc: Client, on_head: Callable[[int], None]) -> Subscription:
    """Call `on_head(position)` for each announcement (ignoring anything malformed)."""

    async def received(message: Msg) -> None:
        try:
            position = orjson.loads(message.data)["position"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.debug("ignoring a malformed %s message", HEAD)
            return
        if type(position) is int:
            on_head(position)

    return await nc.subscribe(HEAD, cb=received)
