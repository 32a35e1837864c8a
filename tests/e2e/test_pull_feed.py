"""The continuous pull (service/nats/pull_feed.py) against a real nats-server: every message
of the consumer arrives exactly once, in batches of at most `batch`, while earlier batches are
still unacknowledged; `close` hands back what was delivered and leaves nothing in flight; and
what is delivered and not acknowledged stays within the byte budget, a message larger than a
request included."""

from __future__ import annotations

import asyncio
import logging

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import MsgAlreadyAckdError
from nats.js.api import AckPolicy, ConsumerConfig

from service.nats.acks import ack_all
from service.nats.pull_feed import ByteBudget, PullFeed
from service.settings import load_settings

STREAM, CONSUMER = "FEED", "feed"
DEFAULT = ByteBudget.of(load_settings())


async def _setup(url: str, messages: int, pad: int = 0) -> nats.NATS:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["feed.>"])
    await js.add_consumer(
        STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    )
    for i in range(messages):
        await js.publish_async(f"feed.{i % 7}", str(i).encode().ljust(pad))
    await js.publish_async_completed()
    return nc


async def _pending(nc: nats.NATS, unacked: int = 0) -> tuple[int, int]:
    """(not yet delivered, delivered and not acked), once the server has taken the acks in
    (once at most `unacked` wait, or after 2.5 s)."""
    await nc.flush()
    for _ in range(50):
        info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
        if (info.num_ack_pending or 0) <= unacked:
            break
        await asyncio.sleep(0.05)  # acks are applied by the consumer a moment after they arrive
    return info.num_pending or 0, info.num_ack_pending or 0


async def test_every_message_arrives_once_in_bounded_batches(nats_url: str) -> None:
    nc = await _setup(nats_url, 1234)
    feed = PullFeed(nc, STREAM, CONSUMER, batch=100, expires=0.5, budget=DEFAULT)
    await feed.start()
    seen: list[int] = []
    while len(seen) < 1234:
        batch = await feed.take(5)
        assert 0 < len(batch) <= 100
        seen.extend(int(m.data) for m in batch)
        await ack_all(nc, batch)
    assert seen == list(range(1234))  # one consumer: in stream order, no gap, no repeat
    assert await feed.take(0.6) == []  # nothing more, even after a request expired
    assert await feed.close() == []
    assert await _pending(nc) == (0, 0)
    await nc.close()


async def test_close_returns_what_was_delivered_and_leaves_nothing_in_flight(nats_url: str) -> None:
    nc = await _setup(nats_url, 250)
    feed = PullFeed(nc, STREAM, CONSUMER, batch=100, expires=0.5, budget=DEFAULT)
    await feed.start()
    first = await feed.take(5)
    await asyncio.sleep(0.2)  # the next request's messages arrive meanwhile
    rest = await feed.close()
    taken = first + rest
    assert len(first) <= 100
    assert len(rest) > 0
    assert [int(m.data) for m in taken] == list(range(len(taken)))
    for message in taken:
        await message.ack()
    # Delivered messages were all handed back, so after their acks nothing waits for
    # redelivery; what was never asked for is still pending for the next reader.
    assert await _pending(nc) == (250 - len(taken), 0)
    await nc.close()


async def test_a_refused_pull_is_retried_calmly_not_in_a_spin(nats_url: str) -> None:
    nc = await _setup(nats_url, 0)
    feed = PullFeed(nc, STREAM, CONSUMER, batch=100, expires=0.5, budget=DEFAULT)
    await feed.start()
    assert await feed.take(0.2) == []
    await nc.jetstream().delete_consumer(STREAM, CONSUMER)  # every pull now ends in a refusal
    before = nc.stats["out_msgs"]
    for _ in range(4):
        assert await feed.take(0.5) == []
    # About one request per take (a spin would send thousands in two seconds).
    assert nc.stats["out_msgs"] - before <= 12
    assert await feed.close() == []
    await nc.close()


async def test_a_batch_acknowledged_at_once_is_acknowledged_and_not_twice(nats_url: str) -> None:
    nc = await _setup(nats_url, 300)
    feed = PullFeed(nc, STREAM, CONSUMER, batch=300, expires=0.5, budget=DEFAULT)
    try:
        await feed.start()
        taken: list[Msg] = []
        while len(taken) < 300:  # they may arrive over several takes
            taken += await feed.take(5)
        assert [int(m.data) for m in taken] == list(range(300))
        await ack_all(nc, taken[1:])
        assert await _pending(nc, unacked=1) == (0, 1)  # all but the first, which waits
        with pytest.raises(MsgAlreadyAckdError):
            await ack_all(nc, taken[:2])  # the second is acked already: nothing is sent
        await asyncio.sleep(0.2)  # had the first been acked, the server would have taken it by now
        assert await _pending(nc, unacked=1) == (0, 1)
        await ack_all(nc, taken[:1])
        assert await _pending(nc) == (0, 0)
    finally:
        await feed.close()
        await nc.close()


async def test_what_is_delivered_and_not_acked_stays_within_the_byte_budget(nats_url: str) -> None:
    nc = await _setup(nats_url, 300, pad=1000)  # some 1,040 bytes each, subjects included
    budget = ByteBudget(feed=20_000, batch=8_000, largest=2_000)
    feed = PullFeed(nc, STREAM, CONSUMER, batch=100, expires=0.5, budget=budget)
    await feed.start()
    try:
        first = await feed.take(5)
        assert 0 < sum(len(m.data) for m in first) <= 8_000
        await asyncio.sleep(1.0)  # the feed asks for more meanwhile, as far as the budget goes
        assert feed.buffered_bytes <= 20_000
        delivered = (await nc.jetstream().consumer_info(STREAM, CONSUMER)).num_ack_pending
        # The batch in hand and what the feed holds: within 8,000 + 20,000 bytes of messages.
        assert len(first) < delivered <= (8_000 + 20_000) // 1_000
        seen = [int(m.data) for m in first]
        await ack_all(nc, first)
        while len(seen) < 300:
            batch = await feed.take(5)
            assert 0 < sum(len(m.data) for m in batch) <= 8_000
            seen.extend(int(m.data) for m in batch)
            await ack_all(nc, batch)
        assert seen == list(range(300))
    finally:
        await feed.close()
        await nc.close()


async def test_a_message_larger_than_any_request_still_arrives(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A message stored before the stream's size limit came down: larger than a request may be
    within the budget. The server answers such a request with a 409 and no message; it is then
    asked for alone, and everything after it follows."""
    nc = await _setup(nats_url, 3)
    js = nc.jetstream()
    await js.publish("feed.big", b"3".ljust(50_000))
    for i in range(4, 7):
        await js.publish("feed.small", str(i).encode())
    budget = ByteBudget(feed=20_000, batch=8_000, largest=2_000)
    feed = PullFeed(nc, STREAM, CONSUMER, batch=100, expires=0.5, budget=budget)
    await feed.start()
    seen: list[list[int]] = []
    try:
        with caplog.at_level(logging.WARNING, logger="service.nats.pull_feed"):
            while sum(map(len, seen)) < 7:
                batch = await feed.take(5)
                assert batch, "the feed stalled"
                seen.append([int(m.data) for m in batch])
                await ack_all(nc, batch)
        assert [n for b in seen for n in b] == list(range(7))
        assert [3] in seen  # alone: a batch's bytes hold one such message and no more
        assert any("asking for it alone" in r.getMessage() for r in caplog.records)
        assert await _pending(nc) == (0, 0)
    finally:
        await feed.close()
        await nc.close()
