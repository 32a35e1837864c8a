"""A message as it arrived at an edge (NATS, HTTP, a file), kept whole: the pipeline decodes
it, and the ledger stores it whole when it is rejected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Incoming", "message_key"]


@dataclass(slots=True)
class Incoming:
    """One message as it arrived, kept whole so that a rejection can store it."""

    raw: bytes
    received_at: int
    source: str = "nats"
    subject: str | None = None
    headers: Mapping[str, str] | None = None
    # A JetStream delivery's reply subject ($JS.ACK...), which names the message's stream and
    # stream sequence: its rejection is stored once however often it is delivered (see
    # `message_key`). Kept as it came and parsed only for a rejection, off the hot path.
    ack_subject: str | None = None


def message_key(ack_subject: str | None) -> str | None:
    """`<stream>:<stream sequence>:<time stored>` of a JetStream message, from its delivery's
    reply subject: the same for every delivery of one message (a redelivery has another
    delivery count and consumer sequence, never another stream sequence or time). The time
    (nanoseconds) tells apart two messages with one sequence in a stream deleted and created
    again, whose sequences start over at 1. None when there is none, or it is not a JetStream
    ack subject.

    The subject is $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.
    <pending>, or from nats-server 2.10 on possibly $JS.ACK.<domain>.<account hash>.<stream>...
    with a random token at the end (as nats-py's Msg.metadata reads them)."""
    if ack_subject is None:
        return None
    tokens = ack_subject.split(".")
    if tokens[:2] != ["$JS", "ACK"]:
        return None
    if len(tokens) == 9:
        return f"{tokens[2]}:{tokens[5]}:{tokens[7]}"
    if len(tokens) >= 11:
        return f"{tokens[4]}:{tokens[7]}:{tokens[9]}"
    return None
