"""The HTTP edge's publisher into CONNECTIONS: messages the stream does not take just now (no
stream, or no leader during an election) are published again until they are taken or the
time is up, each with a Nats-Msg-Id made from its bytes."""

from __future__ import annotations

import asyncio

import nats
import orjson
import pytest

from service.errors import TransientError
from service.nats.intake_publisher import EventPublisher, content_id
from tests.helpers import body

SUBJECT = "connections.s1.connectionCreated"


async def _stored(nc: nats.NATS) -> int:
    return int((await nc.jetstream().stream_info("CONNECTIONS")).state.messages)


async def test_events_wait_for_a_stream_that_comes_and_are_stored_once(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        publisher = EventPublisher(nc, publish_seconds=10)
        events = [orjson.dumps(body(f"e{n}", connection=f"c{n}")) for n in range(3)]
        publishing = asyncio.create_task(publisher.publish([(SUBJECT, e) for e in events]))
        await asyncio.sleep(0.6)  # tries meet "no responders" meanwhile
        assert not publishing.done()
        await nc.jetstream().add_stream(name="CONNECTIONS", subjects=["connections.>"])
        await asyncio.wait_for(publishing, 10)
        assert await _stored(nc) == 3
        # The same bytes again (a client's retry): the stream takes them as duplicates.
        await publisher.publish([(SUBJECT, events[0])])
        assert await _stored(nc) == 3
    finally:
        await nc.close()


async def test_the_same_event_id_with_other_content_still_reaches_the_stream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(name="CONNECTIONS", subjects=["connections.>"])
        first = orjson.dumps(body("e1", data="name=Ana"))
        second = orjson.dumps(body("e1", data="name=Bo"))
        assert content_id(first) != content_id(second)
        await EventPublisher(nc).publish([(SUBJECT, first), (SUBJECT, second)])
        assert await _stored(nc) == 2  # the ledger, not the stream, says `conflict`
    finally:
        await nc.close()


async def test_a_stream_that_never_comes_is_unavailable_once_the_time_is_up(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        publisher = EventPublisher(nc, publish_seconds=1.0)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransientError, match=r"did not acknowledge 1 of 1 events.*try again"):
            await publisher.publish([(SUBJECT, orjson.dumps(body("e1")))])
        assert asyncio.get_running_loop().time() - started >= 1.0
    finally:
        await nc.close()


async def test_a_refusal_for_good_is_not_tried_again(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(name="CONNECTIONS", subjects=["connections.>"], max_msg_size=100)
        publisher = EventPublisher(nc, publish_seconds=10)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransientError, match=r"message size exceeds"):
            await publisher.publish([(SUBJECT, orjson.dumps(body("e1")))])
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await nc.close()
