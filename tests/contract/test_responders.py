"""The NATS responders over a real ledger, with NATS itself replaced by a recorder: what is sent
to the requester's inbox, message by message."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.ledger import store as store_module
from service.ledger.database import create_engine
from service.ledger.store import LedgerStore
from service.nats.responders import Responders
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings
from service.streaming_readers import StreamingReaders
from tests.helpers import created


@dataclass
class Sent:
    subject: str
    data: bytes
    headers: dict[str, str] | None


class RecordingNats:
    def __init__(self) -> None:
        self.sent: list[Sent] = []

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.sent.append(Sent(subject, data, headers))

    async def flush(self) -> None:
        return None


@dataclass
class Request:
    data: bytes
    reply: str


class PoolTakenAfterFirstPage(RecordingNats):
    """After the first page is sent, someone else takes the readers' only connection: the
    replay's next page waits for it past the pool's timeout, as the real store does when every
    reader connection is busy."""

    def __init__(self, readers: AsyncEngine) -> None:
        super().__init__()
        self.readers = readers
        self.taken: AsyncConnection | None = None

    async def flush(self) -> None:
        if self.taken is None:
            self.taken = await self.readers.connect()


def _store_with_one_reader(ledger: LedgerService, settings: Settings) -> tuple[LedgerStore, AsyncEngine]:
    readers = create_engine(settings.resolved_database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    return type(ledger.store)(ledger.store.engine, readers), readers


async def test_a_replay_cut_short_by_the_database_ends_with_the_marker_and_says_why(
    ledger: LedgerService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.pipeline.process([created(f"e{i}", connection=f"c{i}") for i in range(1, 4)])
    monkeypatch.setattr(store_module, "READ_CHUNK", 2)
    store, readers = _store_with_one_reader(ledger, settings)
    nats = PoolTakenAfterFirstPage(readers)
    try:
        responders = Responders(nats, ledger.queries, store, settings, None, ledger.streaming)  # type: ignore[arg-type]
        await responders._replay(Request(b"{}", "_INBOX.r"))  # type: ignore[arg-type]
    finally:
        if nats.taken is not None:
            await nats.taken.close()
        await readers.dispose()
    assert [orjson.loads(m.data)["position"] for m in nats.sent[:-1]] == [1, 2]
    end = nats.sent[-1]
    assert (end.subject, end.data) == ("_INBOX.r", b"")
    assert end.headers == {"Ledger-Replay-End": "2", "Ledger-Replay-Error": "unavailable"}
    assert ledger.streaming.active == 0, "the reader's place is given back"


async def test_a_replay_past_the_cap_on_readers_is_refused_with_the_marker(
    ledger: LedgerService, settings: Settings
) -> None:
    await ledger.pipeline.process([created("e1")])
    nats = RecordingNats()
    readers = StreamingReaders(1)
    assert readers.try_take("someone else")
    responders = Responders(nats, ledger.queries, ledger.store, settings, None, readers)  # type: ignore[arg-type]
    await responders._replay(Request(b'{"after": 0}', "_INBOX.r"))  # type: ignore[arg-type]
    refusal, end = nats.sent
    assert orjson.loads(refusal.data)["error"] == "busy"
    assert "LEDGER_MAX_STREAMING_READERS" in orjson.loads(refusal.data)["message"]
    assert end.headers == {"Ledger-Replay-End": "0", "Ledger-Replay-Error": "busy"}
    readers.give_back()
    nats.sent.clear()
    await responders._replay(Request(b"{}", "_INBOX.r"))  # type: ignore[arg-type]
    assert nats.sent[-1].headers == {"Ledger-Replay-End": "1"}
    assert readers.active == 0


async def test_a_whole_replay_ends_with_the_marker_alone(ledger: LedgerService, settings: Settings) -> None:
    await ledger.pipeline.process([created(f"e{i}", connection=f"c{i}") for i in range(1, 4)])
    nats = RecordingNats()
    responders = Responders(nats, ledger.queries, ledger.store, settings, None, ledger.streaming)  # type: ignore[arg-type]
    await responders._replay(Request(b'{"after": 1}', "_INBOX.r"))  # type: ignore[arg-type]
    assert [orjson.loads(m.data)["position"] for m in nats.sent[:-1]] == [2, 3]
    assert nats.sent[-1].headers == {"Ledger-Replay-End": "3"}


async def test_a_replay_past_the_largest_position_is_refused_naming_the_field(
    ledger: LedgerService, settings: Settings
) -> None:
    await ledger.pipeline.process([created("e1")])
    nats = RecordingNats()
    responders = Responders(nats, ledger.queries, ledger.store, settings, None, ledger.streaming)  # type: ignore[arg-type]
    for body in (b'{"after": 18446744073709551615}', b'{"after": 9223372036854775808}', b'{"limit": 1e300}'):
        nats.sent.clear()
        await responders._replay(Request(body, "_INBOX.r"))  # type: ignore[arg-type]
        refusal, end = nats.sent
        answer = orjson.loads(refusal.data)
        assert answer["error"] == "invalid_field"
        assert answer["field"] in {"after", "limit"}
        assert end.headers is not None
        assert end.headers["Ledger-Replay-Error"] == "invalid_field"
    assert ledger.streaming.active == 0
