"""Acknowledging a batch of JetStream messages in one write.

An ack is an empty message published to the delivered message's reply subject. nats-py's
`Msg.ack()` does that one message per call: the publish's checks, a command encoded on its own,
and a signal to the flusher task each time, a visible share of the ingest loop's CPU under a
backlog (py-spy shows it). Here the PUB commands of a whole batch are
joined into one and queued once, for the client's flusher to write.

This uses nats-py's pending-output queue and the message's acknowledged flag, which are private
to it, through service/driver_internals.py; every ingest test acknowledges through here.
"""

from __future__ import annotations

from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, MsgAlreadyAckdError, NotJSMessageError

from service.driver_internals import is_acked, mark_acked, queue_commands

__all__ = ["ack_all", "progress_all"]


async def ack_all(nc: Client, messages: Sequence[Msg]) -> None:
    """Acknowledge every one of `messages` (as `Msg.ack` each would, with its errors)."""
    if not messages:
        return
    if nc.is_closed:
        raise ConnectionClosedError
    for message in messages:
        if not message.reply:
            raise NotJSMessageError
        if is_acked(message):
            raise MsgAlreadyAckdError(message)
    # While reconnecting, the command waits in the same queue as any publish would, and goes
    # out once connected again; an ack that never arrives means a redelivery, a duplicate.
    await queue_commands(nc, b"".join([b"PUB %s 0\r\n\r\n" % m.reply.encode() for m in messages]))
    for message in messages:
        mark_acked(message)


async def progress_all(nc: Client, messages: Sequence[Msg]) -> None:
    """Tell JetStream that each of `messages` is still being worked on (`+WPI` to its reply
    subject, as `Msg.in_progress` would, which starts its ack_wait again), in one write.
    Messages acknowledged already are left out: their ack has been queued before."""
    pending = [m for m in messages if m.reply and not is_acked(m)]
    if not pending:
        return
    if nc.is_closed:
        raise ConnectionClosedError
    await queue_commands(nc, b"".join([b"PUB %s 4\r\n+WPI\r\n" % m.reply.encode() for m in pending]))
