"""The NATS responders over a real ledger (SQLite and PostgreSQL), on FastStream's in-memory
broker: the requests go through the subscribers as declared for the service (decoding, body
validation, the one refusal), and what is sent to the requester's inbox is recorded, message
by message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from faststream.nats.annotations import NatsMessage
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.app.bootstrap import follow_counts
from service.errors import TransientError
from service.events import MAX_POSITION
from service.ledger import store as store_module
from service.ledger.database import create_engine
from service.ledger.store import LedgerStore
from service.nats.responders import MAX_IN_FLIGHT, Responders, declare_responders
from service.pipeline.ledger_service import LedgerService
from service.pipeline.live_counts import LiveCounts
from service.settings import Settings
from service.streaming_readers import StreamingReaders
from tests.helpers import created

INBOX = "_INBOX.r"


@dataclass
class Sent:
    data: bytes
    headers: dict[str, str]


@dataclass
class Served:
    broker: NatsBroker
    inbox: list[Sent]

    async def ask(self, subject: str, body: bytes) -> dict[str, Any]:
        answer: dict[str, Any] = orjson.loads((await self.broker.request(body, subject)).body)
        return answer

    async def replay(self, body: bytes) -> list[Sent]:
        self.inbox.clear()
        await self.broker.publish(body, "ledger.replay", reply_to=INBOX)
        return list(self.inbox)


@asynccontextmanager
async def serving(
    ledger: LedgerService,
    settings: Settings,
    counts: LiveCounts | None = None,
    *,
    store: LedgerStore | None = None,
    readers: StreamingReaders | None = None,
) -> AsyncIterator[Served]:
    broker = NatsBroker(logger=None)
    responders = Responders(
        broker,
        ledger.queries,
        store or ledger.store,
        settings,
        counts,
        readers or ledger.streaming,  # type: ignore[arg-type]
    )
    declare_responders(broker, responders)
    inbox: list[Sent] = []

    @broker.subscriber(INBOX)
    async def receive(message: NatsMessage) -> None:
        # Only the interface's headers: FastStream adds its own (correlation id, content type).
        headers = {k: v for k, v in message.headers.items() if k.startswith("Ledger-")}
        inbox.append(Sent(message.body, headers))

    async with TestNatsBroker(broker, connect_only=False) as served:
        yield Served(served, inbox)


def _positions(sent: list[Sent]) -> list[int]:
    return [orjson.loads(m.data)["position"] for m in sent]


def _store_with_one_reader(ledger: LedgerService, settings: Settings) -> tuple[LedgerStore, AsyncEngine]:
    readers = create_engine(settings.resolved_database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    return type(ledger.store)(ledger.store.engine, readers), readers


async def test_a_replay_cut_short_by_the_database_ends_with_the_marker_and_says_why(
    ledger: LedgerService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.pipeline.process([created(f"e{i}", connection=f"c{i}") for i in range(1, 4)])
    monkeypatch.setattr(store_module, "READ_CHUNK", 2)
    store, readers = _store_with_one_reader(ledger, settings)
    taken: list[AsyncConnection] = []

    async def take_the_pool_after_the_first_page(*_: Any, **__: Any) -> None:
        # Someone else takes the readers' only connection: the next page waits for it past
        # the pool's timeout, as the real store does when every reader connection is busy.
        if not taken:
            taken.append(await readers.connect())

    try:
        async with serving(ledger, settings, store=store) as served:
            served.broker.connection.flush = take_the_pool_after_the_first_page
            sent = await served.replay(b"{}")
    finally:
        for connection in taken:
            await connection.close()
        await readers.dispose()
    assert _positions(sent[:-1]) == [1, 2]
    end = sent[-1]
    assert end.data == b""
    assert end.headers == {"Ledger-Replay-End": "2", "Ledger-Replay-Error": "unavailable"}
    assert ledger.streaming.active == 0, "the reader's place is given back"


async def test_a_replay_past_the_cap_on_readers_is_refused_with_the_marker(
    ledger: LedgerService, settings: Settings
) -> None:
    await ledger.pipeline.process([created("e1")])
    readers = StreamingReaders(1)
    assert readers.try_take("someone else")
    async with serving(ledger, settings, readers=readers) as served:
        refusal, end = await served.replay(b'{"after": 0}')
        assert orjson.loads(refusal.data)["error"] == "busy"
        assert "LEDGER_MAX_STREAMING_READERS" in orjson.loads(refusal.data)["message"]
        assert end.headers == {"Ledger-Replay-End": "0", "Ledger-Replay-Error": "busy"}
        readers.give_back()
        sent = await served.replay(b"{}")
    assert sent[-1].headers == {"Ledger-Replay-End": "1"}
    assert readers.active == 0


async def test_a_whole_replay_ends_with_the_marker_alone(ledger: LedgerService, settings: Settings) -> None:
    await ledger.pipeline.process([created(f"e{i}", connection=f"c{i}") for i in range(1, 4)])
    async with serving(ledger, settings) as served:
        sent = await served.replay(b'{"after": 1}')
        assert _positions(sent[:-1]) == [2, 3]
        assert sent[-1].headers == {"Ledger-Replay-End": "3"}
        # An empty body is everything; a limit and a session narrow it; unknown fields are ignored.
        assert _positions((await served.replay(b""))[:-1]) == [1, 2, 3]
        sent = await served.replay(b'{"limit": 2, "sessionId": "s1", "extra": 1}')
        assert _positions(sent[:-1]) == [1, 2]
        assert sent[-1].headers == {"Ledger-Replay-End": "2"}


async def test_a_replay_past_the_largest_position_is_refused_naming_the_field(
    ledger: LedgerService, settings: Settings
) -> None:
    await ledger.pipeline.process([created("e1")])
    async with serving(ledger, settings) as served:
        for body in (
            b'{"after": 18446744073709551615}',
            b'{"after": 9223372036854775808}',
            b'{"limit": 1e300}',
        ):
            refusal, end = await served.replay(body)
            answer = orjson.loads(refusal.data)
            assert answer["error"] == "invalid_field"
            assert answer["field"] in {"after", "limit"}
            assert end.headers["Ledger-Replay-Error"] == "invalid_field"
    assert ledger.streaming.active == 0


@pytest.mark.parametrize(
    ("body", "field", "message", "end"),
    [
        (b"nope", None, "the request body must be empty or a JSON object", "0"),
        (b"[1, 2]", None, "the request body must be empty or a JSON object", "0"),
        (b'"after"', None, "the request body must be empty or a JSON object", "0"),
        (b'{"after": -1}', "after", f"after must be an integer from 0 to {MAX_POSITION}", "0"),
        (b'{"after": true}', "after", f"after must be an integer from 0 to {MAX_POSITION}", "0"),
        (b'{"after": "1"}', "after", f"after must be an integer from 0 to {MAX_POSITION}", "0"),
        (b'{"after": 5, "limit": 2.5}', "limit", f"limit must be an integer from 0 to {MAX_POSITION}", "5"),
        (b'{"sessionId": "no spaces"}', "sessionId", "sessionId must be a valid session id", "0"),
        (b'{"sessionId": 7}', "sessionId", "sessionId must be a valid session id", "0"),
    ],
)
async def test_a_bad_replay_body_is_refused_with_the_error_body_then_the_marker(
    ledger: LedgerService, settings: Settings, body: bytes, field: str | None, message: str, end: str
) -> None:
    async with serving(ledger, settings) as served:
        refusal, marker = await served.replay(body)
    assert orjson.loads(refusal.data) == {"error": "invalid_field", "message": message, "field": field}
    assert marker.headers == {"Ledger-Replay-End": end, "Ledger-Replay-Error": "invalid_field"}
    assert ledger.streaming.active == 0


async def test_count_and_connections_answer_good_bodies(ledger: LedgerService, settings: Settings) -> None:
    await ledger.pipeline.process([created("e1", session="s1", connection="c1")])
    async with follow_counts(ledger) as counts, serving(ledger, settings, counts) as served:
        await counts.wait_for(1, 5)
        for body in (b"", b"  ", b"{}", b'{"minPosition": 1}', b'{"minPosition": 0, "other": "ignored"}'):
            assert await served.ask("ledger.sessions.s1.count", body) == {
                "sessionId": "s1",
                "count": 1,
                "position": 1,
            }
            answer = await served.ask("ledger.sessions.s1.connections", body)
            assert (answer["count"], answer["position"]) == (1, 1)
            assert [c["connectionId"] for c in answer["connections"]] == ["c1"]
        assert (await served.ask("ledger.sessions.nobody.count", b""))["count"] == 0


async def test_a_min_position_past_the_head_waits_then_answers_with_the_head(
    ledger: LedgerService, settings: Settings
) -> None:
    settings = settings.model_copy(update={"min_position_wait": 0.2})
    async with follow_counts(ledger) as counts, serving(ledger, settings, counts) as served:
        assert (await served.ask("ledger.sessions.s1.count", b'{"minPosition": 5}'))["position"] == 0


@pytest.mark.parametrize("kind", ["count", "connections"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"nope", None),
        (b"[]", None),
        (b"5", None),
        (b'{"minPosition": -1}', "minPosition"),
        (b'{"minPosition": 1.5}', "minPosition"),
        (b'{"minPosition": true}', "minPosition"),
        (b'{"minPosition": "3"}', "minPosition"),
        (b'{"minPosition": 9223372036854775808}', "minPosition"),
    ],
)
async def test_a_bad_count_or_connections_body_is_refused_naming_the_field(
    ledger: LedgerService, settings: Settings, kind: str, body: bytes, field: str | None
) -> None:
    async with follow_counts(ledger) as counts, serving(ledger, settings, counts) as served:
        answer = await served.ask(f"ledger.sessions.s1.{kind}", body)
    message = (
        "the request body must be empty or a JSON object"
        if field is None
        else f"minPosition must be an integer from 0 to {MAX_POSITION}"
    )
    assert answer == {"error": "invalid_field", "message": message, "field": field}


@pytest.mark.parametrize("kind", ["count", "connections"])
async def test_an_invalid_session_id_in_the_subject_is_refused_naming_session_id(
    ledger: LedgerService, settings: Settings, kind: str
) -> None:
    async with follow_counts(ledger) as counts, serving(ledger, settings, counts) as served:
        for body in (b"", b'{"minPosition": 1}'):
            answer = await served.ask(f"ledger.sessions.{'x' * 257}.{kind}", body)
            assert answer == {
                "error": "invalid_field",
                "message": "the sessionId in the subject is not a valid session id",
                "field": "sessionId",
            }


async def test_a_database_out_of_reach_is_answered_unavailable(
    ledger: LedgerService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*_: Any) -> dict[str, Any]:
        raise TransientError("the database is unavailable")

    monkeypatch.setattr(ledger.queries, "connections", unreachable)
    async with follow_counts(ledger) as counts, serving(ledger, settings, counts) as served:
        answer = await served.ask("ledger.sessions.s1.connections", b"")
    assert answer == {"error": "unavailable", "message": "the database is unavailable", "field": None}


async def test_each_subscriber_answers_in_the_queue_group_at_most_max_in_flight_at_once(
    ledger: LedgerService, settings: Settings
) -> None:
    async with serving(ledger, settings) as served:
        subscribers = {
            s.subject.template: s for s in served.broker.subscribers if s.subject.template != INBOX
        }  # type: ignore[attr-defined]
    assert set(subscribers) == {
        "ledger.sessions.{sessionId}.count",
        "ledger.sessions.{sessionId}.connections",
        "ledger.sessions.{sessionId}.usage",
        "ledger.replay",
    }
    for subscriber in subscribers.values():
        assert subscriber.queue == "connection-ledger"
        assert subscriber.max_workers == MAX_IN_FLIGHT
