"""Batches published to JetStream with every acknowledgement counted
(service/nats/chained_publisher.py), against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from service.nats.chained_publisher import AckedPublisher, PublishFailed


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


async def _payloads(js: JetStreamContext, stream: str) -> list[bytes]:
    """Every message of `stream`, in stream order."""
    last = (await js.stream_info(stream)).state.last_seq
    return [(await js.get_msg(stream, seq)).data for seq in range(1, last + 1)]


async def test_a_message_no_stream_takes_fails_the_batch_and_nothing_after_it_is_stored(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    with pytest.raises(PublishFailed, match="503") as failed:
        await publisher.publish(
            [("out.a", b"1", "a"), ("nowhere.b", b"2", "b"), ("out.c", b"3", "c")], timeout=10
        )
    assert await _payloads(js, "OUT") == [b"1"], "c was stored without b before it"
    assert (failed.value.stored, failed.value.for_good) == (1, False)
    # The publisher is usable again for the next batch.
    await publisher.publish([("out.d", b"4", "d")], timeout=10)
    assert await _payloads(js, "OUT") == [b"1", b"4"]


@pytest.fixture
async def small_stream(nats_url: str) -> AsyncIterator[tuple[JetStreamContext, AckedPublisher]]:
    """The stream SMALL on small.>, which takes messages of up to 200 bytes, headers included,
    and a started publisher; closed afterwards."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="SMALL", subjects=["small.>"], max_msg_size=200)
    publisher = AckedPublisher(nc)
    await publisher.start()
    yield js, publisher
    await publisher.close()
    await nc.close()


def _small(n: int) -> tuple[str, bytes, str]:
    return (f"small.{n}", f"m{n}".encode(), f"id-{n}")


TOO_LARGE = ("small.big", b"x" * 300, "id-big")


async def test_a_message_the_stream_refuses_stops_the_batch_in_order(
    small_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = small_stream
    # The first batch: one acknowledgement a message.
    with pytest.raises(PublishFailed, match="message size exceeds maximum") as failed:
        await publisher.publish([_small(0), _small(1), TOO_LARGE, _small(3), _small(4)], timeout=10)
    assert await _payloads(js, "SMALL") == [b"m0", b"m1"], "messages after the refused one were stored"
    assert (failed.value.stored, failed.value.for_good) == (2, True)
    # The same again (the caller retrying from where it stood) stores nothing more.
    with pytest.raises(PublishFailed, match="10054") as failed:
        await publisher.publish([TOO_LARGE, _small(3), _small(4)], timeout=10)
    assert failed.value.stored == 0
    assert await _payloads(js, "SMALL") == [b"m0", b"m1"]


async def test_a_message_the_stream_refuses_stops_a_chained_batch_in_order(
    small_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = small_stream
    await publisher.publish([_small(0)], timeout=10)
    await publisher.publish([_small(1)], timeout=10)
    assert publisher.chained == 1
    with pytest.raises(PublishFailed, match="message size exceeds maximum") as failed:
        await publisher.publish([_small(2), TOO_LARGE, _small(4), _small(5)], timeout=10)
    assert await _payloads(js, "SMALL") == [b"m0", b"m1", b"m2"]
    assert (failed.value.stored, failed.value.for_good) == (1, True)
    assert publisher.broken == 1


async def test_a_message_larger_than_the_server_takes_is_not_sent(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    huge = ("out.huge", b"x" * publisher.nc.max_payload, "huge")
    with pytest.raises(PublishFailed, match="max_payload") as failed:
        await publisher.publish([("out.a", b"a", "a"), huge, ("out.c", b"c", "c")], timeout=10)
    assert (failed.value.stored, failed.value.for_good) == (1, True)
    assert await _payloads(js, "OUT") == [b"a"]
    # The server would have closed the connection for it: it is still there.
    assert publisher.nc.is_connected
    await publisher.publish([("out.c", b"c", "c")], timeout=10)
    assert await _payloads(js, "OUT") == [b"a", b"c"]


async def test_a_one_by_one_batch_goes_on_after_another_publishers_message(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    await publisher.publish([("out.a", b"a", "a"), ("out.b", b"b", "b")], timeout=10)
    await js.publish("out.foreign", b"foreign", headers={"Nats-Msg-Id": "foreign"})
    # A publisher restarted from an older checkpoint: a and b are duplicates, and the stream's
    # last message is not b, which c names.
    fresh = AckedPublisher(publisher.nc)
    await fresh.start()
    await fresh.publish(
        [("out.a", b"a", "a"), ("out.b", b"b", "b"), ("out.c", b"c", "c"), ("out.d", b"d", "d")], timeout=10
    )
    await fresh.close()
    assert fresh.resumed == 1
    assert await _payloads(js, "OUT") == [b"a", b"b", b"foreign", b"c", b"d"]


async def test_batches_after_the_first_are_confirmed_by_one_acknowledgement(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    batches = [[(f"out.{b}", f"{b}-{i}".encode(), f"id-{b}-{i}") for i in range(1200)] for b in range(4)]
    for batch in batches:
        await publisher.publish(batch, timeout=10)
    # The first batch is acknowledged message by message; the three after it are chained.
    assert (publisher.chained, publisher.broken) == (3, 0)
    assert (await js.stream_info("OUT")).state.messages == 4800
    for seq in (1, 1200, 1201, 2400, 4800):
        stored = await js.get_msg("OUT", seq)
        batch, n = divmod(seq - 1, 1200)
        assert stored.data == f"{batch}-{n}".encode()
        assert stored.headers is not None
        assert stored.headers["Nats-Msg-Id"] == f"id-{batch}-{n}"
    chained = (await js.get_msg("OUT", 1201)).headers
    assert chained is not None
    assert chained["Nats-Expected-Last-Msg-Id"] == "id-0-1199"


async def test_a_batch_repeating_stored_messages_stores_only_the_new_ones(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    await publisher.publish([(f"out.{i}", str(i).encode(), f"id-{i}") for i in range(100)], timeout=10)
    # A relay restarted from an older checkpoint: 40 records published already, then 60 new
    # ones. The 40 are duplicates; the first new one follows the last stored one.
    await publisher.publish([(f"out.{i}", str(i).encode(), f"id-{i}") for i in range(60, 160)], timeout=10)
    info = (await js.stream_info("OUT")).state
    assert (info.messages, info.last_seq) == (160, 160)
    assert [(await js.get_msg("OUT", seq)).data for seq in (100, 101, 160)] == [b"99", b"100", b"159"]
    # From a publisher that knows nothing yet: the same, one acknowledgement a message.
    fresh = AckedPublisher(publisher.nc)
    await fresh.start()
    await fresh.publish([(f"out.{i}", str(i).encode(), f"id-{i}") for i in range(150, 200)], timeout=10)
    await fresh.publish([(f"out.{i}", str(i).encode(), f"id-{i}") for i in range(200, 250)], timeout=10)
    await fresh.close()
    info = (await js.stream_info("OUT")).state
    assert (info.messages, info.last_seq) == (250, 250)
    assert (await js.get_msg("OUT", 161)).data == b"160"
    assert (fresh.chained, fresh.broken) == (0, 0)  # the first had duplicates: not chained on


async def test_a_chain_broken_by_another_publisher_loses_nothing(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    await publisher.publish([("out.a", b"a", "a")], timeout=10)
    await js.publish("out.foreign", b"foreign", headers={"Nats-Msg-Id": "foreign"})
    batch = [(f"out.{i}", str(i).encode(), f"id-{i}") for i in range(50)]
    await publisher.publish(batch, timeout=10)
    assert publisher.broken == 1
    info = (await js.stream_info("OUT")).state
    assert (info.messages, info.last_seq) == (52, 52)
    assert (await js.get_msg("OUT", 3)).data == b"0"
    assert (await js.get_msg("OUT", 52)).data == b"49"


async def test_a_chained_batch_with_a_message_no_stream_takes_fails(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    await publisher.publish([("out.a", b"a", "a")], timeout=10)
    with pytest.raises(PublishFailed, match="503") as failed:
        await publisher.publish(
            [("out.b", b"b", "b"), ("nowhere.c", b"c", "c"), ("out.d", b"d", "d")], timeout=10
        )
    # Neither the chained try nor the one-by-one one stored d, which must come after c.
    assert await _payloads(js, "OUT") == [b"a", b"b"]
    assert failed.value.stored == 1


async def test_chains_that_keep_breaking_give_way_to_one_acknowledgement_a_message(
    out_stream: tuple[JetStreamContext, AckedPublisher],
) -> None:
    js, publisher = out_stream
    await publisher.publish([("out.first", b"first", "first")], timeout=10)
    for attempt in range(5):
        await js.publish("out.foreign", b"foreign", headers={"Nats-Msg-Id": f"foreign-{attempt}"})
        await publisher.publish([(f"out.{attempt}", str(attempt).encode(), f"id-{attempt}")], timeout=10)
    assert (publisher.broken, publisher.chained) == (3, 0)  # given up after three
    assert (await js.stream_info("OUT")).state.messages == 11
