"""The NATS responders over a real ledger, with NATS itself replaced by a recorder: what is sent
to the requester's inbox, message by message."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson

from service.bootstrap import Ledger
from service.errors import TransientError
from service.nats.responders import Responders
from service.settings import Settings
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


class CutShort:
    """The ledger's store, whose records stop with the database gone after the first page."""

    def __init__(self, ledger: Ledger) -> None:
        self.store = ledger.store

    async def records(self, **options: Any) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        async for rows in self.store.records(**{**options, "limit": 2}):
            yield rows
        raise TransientError("the database is unreachable")


async def test_a_replay_cut_short_by_the_database_ends_with_the_marker_and_says_why(
    ledger: Ledger, settings: Settings
) -> None:
    await ledger.pipeline.process([created(f"e{i}", connection=f"c{i}") for i in range(1, 4)])
    nats = RecordingNats()
    responders = Responders(nats, ledger.queries, CutShort(ledger), settings, None)  # type: ignore[arg-type]
    await responders._replay(Request(b"{}", "_INBOX.r"))  # type: ignore[arg-type]
    assert [orjson.loads(m.data)["position"] for m in nats.sent[:-1]] == [1, 2]
    end = nats.sent[-1]
    assert (end.subject, end.data) == ("_INBOX.r", b"")
    assert end.headers == {"Ledger-Replay-End": "2", "Ledger-Replay-Error": "unavailable"}


async def test_a_whole_replay_ends_with_the_marker_alone(ledger: Ledger, settings: Settings) -> None:
    await ledger.pipeline.process([created(f"e{i}", connection=f"c{i}") for i in range(1, 4)])
    nats = RecordingNats()
    responders = Responders(nats, ledger.queries, ledger.store, settings, None)  # type: ignore[arg-type]
    await responders._replay(Request(b'{"after": 1}', "_INBOX.r"))  # type: ignore[arg-type]
    assert [orjson.loads(m.data)["position"] for m in nats.sent[:-1]] == [2, 3]
    assert nats.sent[-1].headers == {"Ledger-Replay-End": "3"}
