"""Time travel and usage at every edge (CONTRACT section 12), on every backend: `at` and `asOf`
on the count and connections queries over HTTP and NATS, usage over HTTP and NATS, and each bad
option refused naming it. The figures themselves are held against a fold of the replay by the
property tests (test_properties.py); these tests check what each edge makes of them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from service.app.bootstrap import follow_counts
from service.pipeline.ledger_service import LedgerService
from service.pipeline.queries import AsOf, UsageWindow
from service.settings import Settings
from tests.contract.test_http import api  # noqa: F401  (the HTTP client fixture)
from tests.contract.test_responders import Served, serving
from tests.helpers import created, destroyed

T0 = 1_700_000_000_000


async def _history(ledger: LedgerService) -> None:
    """s1: c1 joins at T0 (position 1), c2 at T0+1000 (2), c1 leaves at T0+3000 (3, client), c3
    joins at T0+4000 (4); another session in between (5); c2 is forced out at T0+6000 (6)."""
    for event in (
        created("e1", connection="c1", timestamp=T0),
        created("e2", connection="c2", timestamp=T0 + 1000),
        destroyed("e3", connection="c1", timestamp=T0 + 3000, reason="clientDisconnected"),
        created("e4", connection="c3", timestamp=T0 + 4000),
        created("e5", session="s2", connection="x", timestamp=T0 + 5000),
        destroyed("e6", connection="c2", timestamp=T0 + 6000, reason="forceDisconnected"),
    ):
        await ledger.pipeline.process([event])


# The s1 connection set after each position.
SETS = {0: [], 1: ["c1"], 2: ["c1", "c2"], 3: ["c2"], 4: ["c2", "c3"], 5: ["c2", "c3"], 6: ["c3"]}


def _ids(answer: dict[str, Any]) -> list[str]:
    return [c["connectionId"] for c in answer["connections"]]


async def test_the_session_as_of_each_position_and_time(ledger: LedgerService) -> None:
    await _history(ledger)
    queries = ledger.queries
    for position, live in SETS.items():
        answer = await queries.connections("s1", AsOf(at=position))
        assert (_ids(answer), answer["count"], answer["position"]) == (live, len(live), position)
        assert await queries.count("s1", AsOf(at=position)) == {
            "sessionId": "s1",
            "count": len(live),
            "position": position,
        }
    # Records are stamped as they commit: as of a record's recordedAt, the answer is as of it.
    stamps = await _recorded_at(ledger)
    for stamp in stamps.values():
        answer = await queries.count("s1", AsOf(as_of=stamp))
        last_with_stamp = max(p for p, s in stamps.items() if s <= stamp)
        assert answer["position"] == last_with_stamp
        assert answer["count"] == len(SETS[last_with_stamp])
    before = await queries.connections("s1", AsOf(as_of=min(stamps.values()) - 1))
    assert (before["position"], before["count"], before["connections"]) == (0, 0, [])
    assert (await queries.count("s1", AsOf(as_of=2**63 - 1)))["position"] == 6
    assert (await queries.count("nobody", AsOf(at=3)))["count"] == 0


async def _recorded_at(ledger: LedgerService) -> dict[int, int]:
    from contextlib import aclosing

    from service.ledger.records import record_to_dict

    stamps: dict[int, int] = {}
    async with aclosing(ledger.store.records()) as pages:
        async for rows in pages:
            for row in rows:
                record = record_to_dict(row)
                stamps[record["position"]] = record["recordedAt"]
    return stamps


async def test_usage_over_windows(ledger: LedgerService) -> None:
    await _history(ledger)
    whole = await ledger.queries.usage("s1", UsageWindow(0, T0 + 10_000))
    assert whole == {
        "sessionId": "s1",
        "from": 0,
        "to": T0 + 10_000,
        "peak": {"count": 2, "timestamp": T0 + 1000},
        # c1 3 s, c2 5 s, c3 6 s (live: until `to`)
        "connectionMilliseconds": 3000 + 5000 + 6000,
        "connections": 3,
        "byReason": {"clientDisconnected": 1, "forceDisconnected": 1},
        "open": 1,
        "position": 6,
    }
    # A window that cuts c1 and c2 at its start and c3 at its end.
    cut = await ledger.queries.usage("s1", UsageWindow(T0 + 2000, T0 + 5000))
    assert (cut["connectionMilliseconds"], cut["connections"], cut["open"]) == (1000 + 3000 + 1000, 3, 2)
    assert cut["peak"] == {"count": 2, "timestamp": T0 + 2000}
    assert cut["byReason"] == {"clientDisconnected": 1}
    empty = await ledger.queries.usage("s1", UsageWindow(T0 + 2000, T0 + 2000))
    assert (empty["connections"], empty["peak"]) == (0, {"count": 0, "timestamp": None})
    # A session with no record has an empty usage, not an error; the default window ends now.
    unknown = await ledger.queries.usage("nobody")
    assert (unknown["connections"], unknown["from"]) == (0, 0)
    assert abs(unknown["to"] - time.time() * 1000) < 60_000
    pages = [page async for page in ledger.queries.usage_of_every_session(UsageWindow(0, T0 + 10_000))]
    every = [answer for page in pages for answer in page]
    assert [a["sessionId"] for a in every] == ["s1", "s2"]
    assert every[0] == whole
    assert (every[1]["connections"], every[1]["open"], every[1]["connectionMilliseconds"]) == (1, 1, 5000)


Client = tuple[httpx.AsyncClient, LedgerService, Any]


async def test_http_at_as_of_and_usage(api: Client) -> None:  # noqa: F811
    client, ledger, _ = api
    await _history(ledger)
    answer = (await client.get("/v1/sessions/s1", params={"at": 2})).json()
    assert (_ids(answer), answer["position"]) == (["c1", "c2"], 2)
    assert (await client.get("/v1/sessions/s1/count", params={"at": 3})).json() == {
        "sessionId": "s1",
        "count": 1,
        "position": 3,
    }
    stamps = await _recorded_at(ledger)
    answer = (await client.get("/v1/sessions/s1/count", params={"asOf": stamps[6]})).json()
    assert answer["position"] == 6
    usage = (await client.get("/v1/sessions/s1/usage", params={"from": T0 + 2000, "to": T0 + 5000})).json()
    assert (usage["connectionMilliseconds"], usage["connections"]) == (5000, 3)
    assert (await client.get("/v1/sessions/nobody/usage")).json()["connections"] == 0


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/sessions/s1", {"at": 7}, "at"),
        ("/v1/sessions/s1/count", {"at": 7}, "at"),
        ("/v1/sessions/s1/count", {"at": -1}, "at"),
        ("/v1/sessions/s1/count", {"at": "x"}, "at"),
        ("/v1/sessions/s1/count", {"at": 2**63}, "at"),
        ("/v1/sessions/s1", {"asOf": "1.5"}, "asOf"),
        ("/v1/sessions/s1", {"at": 1, "asOf": 5}, "asOf"),
        ("/v1/sessions/s1/usage", {"from": 5, "to": 4}, "from"),
        ("/v1/sessions/s1/usage", {"from": "²"}, "from"),
        ("/v1/sessions/s1/usage", {"to": 2**63}, "to"),
        ("/v1/sessions/s1/usage", {"to": "soon"}, "to"),
        ("/v1/sessions/%20/usage", {}, "sessionId"),
    ],
)
async def test_http_bad_options_are_refused_naming_them(
    api: Client,  # noqa: F811
    path: str,
    params: dict[str, Any],
    field: str,
) -> None:
    client, ledger, _ = api
    await _history(ledger)
    response = await client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_field"
    assert response.json()["field"] == field


@pytest.fixture
async def served(ledger: LedgerService, settings: Settings) -> AsyncIterator[Served]:
    async with follow_counts(ledger) as counts, serving(ledger, settings, counts) as on_nats:
        yield on_nats


async def test_nats_at_as_of_and_usage(ledger: LedgerService, served: Served) -> None:
    await _history(ledger)
    answer = await served.ask("ledger.sessions.s1.connections", b'{"at": 4}')
    assert (_ids(answer), answer["position"]) == (["c2", "c3"], 4)
    assert await served.ask("ledger.sessions.s1.count", b'{"at": 1}') == {
        "sessionId": "s1",
        "count": 1,
        "position": 1,
    }
    stamps = await _recorded_at(ledger)
    answer = await served.ask("ledger.sessions.s1.count", orjson.dumps({"asOf": stamps[3], "minPosition": 6}))
    assert answer["position"] >= 3
    usage = await served.ask("ledger.sessions.s1.usage", orjson.dumps({"from": 0, "to": T0 + 10_000}))
    assert usage == await ledger.queries.usage("s1", UsageWindow(0, T0 + 10_000))
    assert (await served.ask("ledger.sessions.s1.usage", b""))["connections"] == 3


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("count", b'{"at": 7}', "at"),
        ("connections", b'{"at": 7}', "at"),
        ("count", b'{"at": "3"}', "at"),
        ("count", b'{"at": 1, "asOf": 2}', "asOf"),
        ("connections", b'{"asOf": -5}', "asOf"),
        ("usage", b'{"from": 10, "to": 9}', "from"),
        ("usage", b'{"to": 9223372036854775808}', "to"),
        ("usage", b'{"from": 1.5}', "from"),
        ("usage", b"[1]", None),
    ],
)
async def test_nats_bad_options_are_refused_naming_them(
    ledger: LedgerService, served: Served, kind: str, body: bytes, field: str | None
) -> None:
    await _history(ledger)
    answer = await served.ask(f"ledger.sessions.s1.{kind}", body)
    assert answer["error"] == "invalid_field"
    assert answer["field"] == field
    assert set(answer) == {"error", "message", "field"}
