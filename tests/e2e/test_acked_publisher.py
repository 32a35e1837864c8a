"""Batches published to JetStream with every acknowledgement counted
(service/nats/acked_publisher.py), against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from service.nats.acked_publisher import AckedPublisher, PublishFailed


@pytest.fixture
async def out_stream(nats_url: str) -> AsyncIterator[tuple[JetStreamContext, AckedPublisher]]:
    """The stream OUT on out.>, and a started publisher; closed afterwards."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="OUT", subjects=["out.>"])
    publisher = AckedPublisher(nc)
    await publisher.start()
    yield js, publisher
    await publisher.close()
    await nc.close()


async def test_a_batch_returns_once_every_message_is_stored(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    batch = [(f"out.{i % 3}", str(i).encode(), f"id-{i}") for i in range(750)]
    await publisher.publish(batch, timeout=10)
    assert (await js.stream_info("OUT")).state.messages == 750
    # The same ids again (a relay restarted from its checkpoint): acknowledged as duplicates,
    # nothing stored twice.
    await publisher.publish(batch[-100:], timeout=10)
    assert (await js.stream_info("OUT")).state.messages == 750
    stored = await js.get_msg("OUT", 750)
    assert stored.data == b"749"


async def test_a_message_no_stream_takes_fails_the_batch(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    with pytest.raises(PublishFailed, match="503"):
        await publisher.publish([("out.a", b"1", "a"), ("nowhere.b", b"2", "b")], timeout=10)
    # The publisher is usable again for the next batch.
    await publisher.publish([("out.c", b"3", "c")], timeout=10)
    assert (await js.stream_info("OUT")).state.messages == 2


async def test_a_refusal_by_the_stream_names_the_error(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="SMALL", subjects=["small.>"], max_msg_size=8)
    publisher = AckedPublisher(nc)
    await publisher.start()
    with pytest.raises(PublishFailed, match="JetStream error"):
        await publisher.publish([("small.x", b"far too large a message", "x")], timeout=10)
    await publisher.close()
    await nc.close()
