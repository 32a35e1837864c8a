"""A NATS message's rejection is stored once, however often the message is delivered: a batch
committed and then not acknowledged (a crash between the commit and the ack) comes again, and
its rejections are keyed by stream and stream sequence, unique in the rejected table (CONTRACT
6: every rejected message is kept, once). Rejections without that identity (HTTP, import) are
stored each time, as before."""

from __future__ import annotations

import base64

import orjson
import pytest
from nats.aio.msg import Msg

from service.inbound import Incoming, message_key
from service.ledger.records import rejected_to_dict
from service.pipeline.ledger_service import LedgerService
from tests.helpers import body, created

SUBJECT = "connections.s1.connectionCreated"


def _delivered(raw: bytes, stream_sequence: int, delivered: int) -> Incoming:
    """Message `stream_sequence` of CONNECTIONS, on its `delivered`-th delivery."""
    consumer_sequence = stream_sequence + 100 * delivered
    ack = (
        f"$JS.ACK.CONNECTIONS.connection-ledger.{delivered}.{stream_sequence}.{consumer_sequence}"
        f".1732700000000000000.{5 - delivered}"
    )
    return Incoming(raw, 1_732_700_000_000, "nats", SUBJECT, None, ack)


def _batch(delivered: int) -> list[Incoming]:
    return [
        _delivered(b"{broken", 7, delivered),
        _delivered(orjson.dumps(body("e1", data="other content")), 8, delivered),  # conflict
        _delivered(orjson.dumps(body("e2", connection="c2")), 9, delivered),
        _delivered(orjson.dumps({**body("e3"), "type": "connectionMoved"}), 10, delivered),
    ]


async def _stored(ledger: LedgerService) -> list[dict[str, object]]:
    return [rejected_to_dict(row) async for page in ledger.store.rejected() for row in page]


async def test_a_batch_committed_twice_stores_each_rejection_once(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1")])
    first = await ledger.pipeline.process(_batch(delivered=1))
    # The same messages again: the batch above committed, its acknowledgement never arrived.
    again = await ledger.pipeline.process(_batch(delivered=2))
    assert first.tally().summary() == {"appended": 1, "duplicates": 0, "rejected": 3, "ignored": 0}
    # Each message gets the same outcome again (and its notice is published again).
    assert again.tally().summary() == {"appended": 0, "duplicates": 1, "rejected": 3, "ignored": 0}

    stored = await _stored(ledger)
    assert [s["code"] for s in stored] == ["malformed_json", "conflict", "unknown_type"]
    sent = _batch(1)
    assert [base64.b64decode(str(s["raw"])) for s in stored] == [sent[0].raw, sent[1].raw, sent[3].raw]

    # A third delivery, alone, after the rest went through: still nothing new.
    await ledger.pipeline.process(_batch(delivered=3)[:1])
    assert len(await _stored(ledger)) == 3


async def test_rejections_without_a_message_identity_are_stored_each_time(ledger: LedgerService) -> None:
    for _ in range(2):
        await ledger.pipeline.process([Incoming(b"{broken", 1, "import"), Incoming(b"{broken", 1, "http")])
    assert [s["source"] for s in await _stored(ledger)] == ["import", "http", "import", "http"]


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.CONNECTIONS.connection-ledger.3.1234.99.1732700000000000000.7",
        # nats-server 2.10+: domain and account hash, and a random token at the end.
        "$JS.ACK.hub.ACCHASH.CONNECTIONS.connection-ledger.3.1234.99.1732700000000000000.7.x9Zq",
        "$JS.ACK._.ACCHASH.CONNECTIONS.connection-ledger.3.1234.99.1732700000000000000.7.x9Zq",
    ],
)
def test_the_key_is_the_stream_sequence_and_time_nats_py_reads(reply: str) -> None:
    metadata = Msg(None, subject=SUBJECT, reply=reply).metadata  # type: ignore[arg-type]
    stored_ns = int(metadata.timestamp.timestamp() * 1e9)
    assert message_key(reply) == "CONNECTIONS:1234:1732700000000000000"
    assert (metadata.stream, metadata.sequence.stream) == ("CONNECTIONS", 1234)
    assert abs(stored_ns - 1732700000000000000) < 1000  # the same time, as nats-py reads it


@pytest.mark.parametrize("reply", [None, "", "_INBOX.abc.def", "$JS.ACK.too.short"])
def test_no_key_without_a_jetstream_ack_subject(reply: str | None) -> None:
    assert message_key(reply) is None
