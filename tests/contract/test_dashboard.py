"""The dashboard's reads on every backend: the overview of a window (GET /v1/overview) and a
session's history (GET /v1/sessions/{id}/history), checked against a small history whose
times are set by the test."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from service.app.bootstrap import follow_counts, open_ledger
from service.commit_signal import CommitSignal
from service.events import Event, EventType, Origin, synthetic_event_id
from service.http.app import HttpContext, create_app
from service.inbound import Incoming
from service.ledger import store as store_module
from service.pipeline.dashboard import DashboardQueries, overview_window
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings
from tests.contract.test_http import DirectPublisher, _asyncapi, _ready
from tests.contract.test_ledger import records
from tests.helpers import CREATED, DESTROYED, body, created

MINUTE = 60_000
# The window the tests ask for: ten one-minute buckets, the last holding NOW.
NOW = 1_732_700_000_000 // MINUTE * MINUTE + 30_000
SINCE = NOW // MINUTE * MINUTE - 9 * MINUTE


def at(bucket: int, second: int = 0) -> int:
    """A moment in a bucket of the window (negative buckets are before it)."""
    return SINCE + bucket * MINUTE + second * 1000


class Clock:
    """The appending instance's clock (`recorded_at`), set by the test."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def vetoing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[LedgerService, Clock]]:
    """A ledger whose built-in hook vetoes recorders, and whose appends are timed by a Clock."""
    clock = Clock()
    monkeypatch.setattr(store_module, "now_ms", clock)
    vetoes_recorders = settings.model_copy(update={"ignore_data_pattern": re.compile("role=recorder")})
    async with open_ledger(vetoes_recorders) as ledger:
        yield ledger, clock


async def write(ledger: LedgerService, clock: Clock, moment: int, *documents: dict[str, Any] | bytes) -> None:
    clock.now = moment
    batch = [
        Incoming(d if isinstance(d, bytes) else orjson.dumps(d), moment, "test", None) for d in documents
    ]
    await ledger.pipeline.process(batch)


async def expire(ledger: LedgerService, clock: Clock, moment: int, session: str, connection: str) -> None:
    clock.now = moment
    event = Event(
        synthetic_event_id(Origin.EXPIRY, session, connection, 1),
        EventType.DESTROYED,
        session,
        moment,
        connection,
        1_732_699_990_000,
        None,
        "networkDisconnected",
        origin=Origin.EXPIRY,
    )
    await ledger.pipeline.commit(await ledger.pipeline.prepare_synthetic([event], moment))


async def known_history(ledger: LedgerService, clock: Clock) -> None:
    # Before the window: s1 has a and b, s3 has z (and nothing after: a constant count).
    await write(
        ledger,
        clock,
        at(-5),
        body("e1", CREATED, "s1", "a"),
        body("e2", CREATED, "s1", "b"),
        body("e3", CREATED, "s3", "z"),
    )
    await write(ledger, clock, at(-5, 10), b"{not json")  # a rejection before the window
    # Bucket 2: a leaves s1, x joins s2; two rejections.
    await write(
        ledger,
        clock,
        at(2, 5),
        body("e4", DESTROYED, "s1", "a"),
        body("e5", CREATED, "s2", "x"),
        b"{not json",
        {"id": "e6", "type": "connectionCreated", "sessionId": "s2"},
    )
    # Bucket 5: a recorder joins s2 (vetoed: no change), y and w join, y leaves.
    await write(
        ledger,
        clock,
        at(5, 1),
        body("e7", CREATED, "s2", "rec", data="role=recorder"),
        body("e8", CREATED, "s2", "y"),
        body("e9", CREATED, "s2", "w"),
    )
    await write(ledger, clock, at(5, 30), body("e10", DESTROYED, "s2", "y"))
    # Bucket 7: expiry destroys w (a synthetic record).
    await expire(ledger, clock, at(7, 2), "s2", "w")
    # Bucket 9: c joins s1, and a second create of c (a new id) changes nothing; a rejection.
    await write(
        ledger,
        clock,
        at(9, 3),
        body("e11", CREATED, "s1", "c"),
        body("e12", CREATED, "s1", "c", data="again"),
        b"[1,",
    )


async def test_the_overview_counts_a_known_history(
    vetoing: tuple[LedgerService, Clock],
) -> None:
    ledger, clock = vetoing
    await known_history(ledger, clock)
    clock.now = NOW
    dashboard = DashboardQueries(ledger.store.engine, clock=lambda: NOW)
    answer = await dashboard.overview(minutes=10, buckets=10, top=10)

    head = len(await records(ledger))
    assert head == 12
    assert answer["position"] == head
    assert (answer["since"], answer["until"], answer["bucketMs"]) == (SINCE, SINCE + 10 * MINUTE, MINUTE)
    # Now: s1 {b, c}, s2 {x}, s3 {z}.
    assert (answer["sessions"], answer["connections"]) == (3, 4)
    assert answer["records"] == 9
    assert answer["vetoes"] == 1
    assert answer["synthetic"] == 1
    assert answer["rejections"] == 3
    assert answer["rejectionsByCode"] == {"malformed_json": 2, "invalid_field": 1}

    buckets = answer["buckets"]
    assert [b["start"] for b in buckets] == [SINCE + i * MINUTE for i in range(10)]
    assert [b["records"] for b in buckets] == [0, 0, 2, 0, 0, 4, 0, 1, 0, 2]
    assert [b["vetoes"] for b in buckets] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert [b["synthetic"] for b in buckets] == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert [b["rejections"] for b in buckets] == [0, 0, 2, 0, 0, 0, 0, 0, 0, 1]
    # Live connections at the end of each bucket: 3 before the window, then -1 +1 in bucket 2,
    # +1 +1 -1 in 5, -1 in 7, +1 in 9.
    assert [b["connections"] for b in buckets] == [3, 3, 3, 3, 3, 4, 4, 3, 3, 4]

    # Peaks over the window: s2 reached 3 (x, y and w; the recorder was vetoed), s1 entered it
    # with 2, s3 kept 1 throughout.
    assert answer["topSessions"] == [
        {"sessionId": "s2", "peak": 3, "count": 1},
        {"sessionId": "s1", "peak": 2, "count": 2},
        {"sessionId": "s3", "peak": 1, "count": 1},
    ]
    assert (await dashboard.overview(minutes=10, buckets=10, top=2))["topSessions"] == [
        {"sessionId": "s2", "peak": 3, "count": 1},
        {"sessionId": "s1", "peak": 2, "count": 2},
    ]


async def test_an_empty_window_and_an_empty_ledger(vetoing: tuple[LedgerService, Clock]) -> None:
    ledger, clock = vetoing
    dashboard = DashboardQueries(ledger.store.engine, clock=lambda: NOW, ttl=0)
    empty = await dashboard.overview(minutes=10, buckets=5)
    assert (empty["position"], empty["connections"], empty["records"], empty["rejections"]) == (0, 0, 0, 0)
    assert [b["connections"] for b in empty["buckets"]] == [0] * 5
    assert empty["topSessions"] == []

    await known_history(ledger, clock)
    # Ten minutes later nothing is in the window, and the connections stayed as they were.
    later = DashboardQueries(ledger.store.engine, clock=lambda: NOW + 20 * MINUTE)
    quiet = await later.overview(minutes=10, buckets=5)
    assert (quiet["records"], quiet["vetoes"], quiet["rejections"]) == (0, 0, 0)
    assert [b["connections"] for b in quiet["buckets"]] == [4] * 5
    assert [s["sessionId"] for s in quiet["topSessions"]] == ["s1", "s2", "s3"]
    assert [s["peak"] for s in quiet["topSessions"]] == [2, 1, 1]


async def test_the_window_starts_where_the_clock_passed_its_start(
    vetoing: tuple[LedgerService, Clock],
) -> None:
    ledger, clock = vetoing
    for index in range(40):
        await write(
            ledger, clock, SINCE - 20 * MINUTE + index * MINUTE, body(f"e{index}", CREATED, "s1", f"c{index}")
        )
    dashboard = DashboardQueries(ledger.store.engine, clock=lambda: NOW)
    answer = await dashboard.overview(minutes=10, buckets=10)
    # Minutes 20 to 29 after the first record are the window's ten buckets; 30 to 39 come after
    # its end (a clock ahead) and count in its last.
    assert [b["records"] for b in answer["buckets"]] == [1] * 9 + [11]
    assert answer["buckets"][0]["connections"] == 21
    assert answer["connections"] == 40


async def test_an_overview_is_read_once_for_every_request_within_its_ttl(
    vetoing: tuple[LedgerService, Clock],
) -> None:
    ledger, clock = vetoing
    await known_history(ledger, clock)
    ticks = [100.0]
    dashboard = DashboardQueries(ledger.store.engine, clock=lambda: NOW, ttl=2.0, monotonic=lambda: ticks[0])
    answers = await asyncio.gather(*(dashboard.overview(minutes=10, buckets=10) for _ in range(12)))
    assert dashboard.reads == 1
    assert all(a == answers[0] for a in answers)

    await write(ledger, clock, at(9, 10), body("e20", CREATED, "s4", "q"))
    ticks[0] += 1.5
    assert (await dashboard.overview(minutes=10, buckets=10))["connections"] == 4
    assert dashboard.reads == 1
    ticks[0] += 1.0
    assert (await dashboard.overview(minutes=10, buckets=10))["connections"] == 5
    assert dashboard.reads == 2
    # Another window is another read.
    await dashboard.overview(minutes=60, buckets=10)
    assert dashboard.reads == 3

    # A read that takes longer than the ttl is kept for twice as long as it took.
    slow_ticks = iter([100.0, 105.0, 109.0, 111.0, 111.5])
    slow = DashboardQueries(
        ledger.store.engine, clock=lambda: NOW, ttl=2.0, monotonic=lambda: next(slow_ticks)
    )
    await slow.overview()  # begins at 100, done at 105
    await slow.overview()  # at 109: kept
    assert slow.reads == 1
    await slow.overview()  # at 111: read again
    assert slow.reads == 2


def test_the_window_is_aligned_to_its_buckets() -> None:
    window = overview_window(NOW, 10, 10)
    assert (window.since, window.width, window.until) == (SINCE, MINUTE, SINCE + 10 * MINUTE)
    assert window.since <= NOW - 9 * MINUTE
    assert window.until > NOW
    # Widths are whole milliseconds, rounded up: 60 minutes in 7 buckets.
    odd = overview_window(NOW, 60, 7)
    assert odd.width == 514_286
    assert odd.until - odd.width <= NOW < odd.until


async def test_a_sessions_history_in_points_with_its_marks(vetoing: tuple[LedgerService, Clock]) -> None:
    ledger, clock = vetoing
    await known_history(ledger, clock)
    dashboard = ledger.dashboard
    s2 = [r for r in await records(ledger) if r["sessionId"] == "s2"]
    assert [r["count"] for r in s2] == [1, 1, 2, 3, 2, 1]

    whole = await dashboard.history("s2", points=600)
    assert (whole["sessionId"], whole["position"], whole["records"], whole["first"]) == ("s2", 12, 6, 1)
    assert whole["points"] == [
        {
            "position": r["position"],
            "sequence": r["sequence"],
            "recordedAt": r["recordedAt"],
            "count": r["count"],
            "low": r["count"],
            "high": r["count"],
        }
        for r in s2
    ]
    assert [(m["position"], m["defaultPrevented"], m["origin"]) for m in whole["marks"]] == [
        (s2[1]["position"], True, None),
        (s2[5]["position"], False, "expiry"),
    ]
    assert whole["marks"][0]["preventedBy"] == "ignore-by-data"
    assert whole["marks"][0]["connectionId"] == "rec"
    assert whole["marks"][1]["type"] == "connectionDestroyed"

    # Four points: records 1-2, 3-4, 5-6 (two a point), each the last of its run with the run's
    # lowest and highest count.
    few = await dashboard.history("s2", points=4)
    assert [(p["sequence"], p["count"], p["low"], p["high"]) for p in few["points"]] == [
        (2, 1, 1, 1),
        (4, 3, 2, 3),
        (6, 1, 1, 2),
    ]
    assert [p["position"] for p in few["points"]] == [s2[1]["position"], s2[3]["position"], s2[5]["position"]]

    none = await dashboard.history("nobody")
    assert none == {
        "sessionId": "nobody",
        "position": 12,
        "records": 0,
        "first": 0,
        "points": [],
        "marks": [],
    }


async def test_the_routes_answer_the_reads_and_refuse_bad_parameters(settings: Settings) -> None:
    async with open_ledger(settings) as ledger, follow_counts(ledger) as counts:
        committed = CommitSignal()
        app = create_app(
            HttpContext(ledger, committed, counts, DirectPublisher(ledger, committed), _ready, _asyncapi)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            await ledger.pipeline.process([created("e1", "s1", "a"), created("e2", "s1", "b")])
            overview = (await client.get("/v1/overview", params={"minutes": 5, "buckets": 5})).json()
            assert (overview["position"], overview["connections"], overview["records"]) == (2, 2, 2)
            assert len(overview["buckets"]) == 5
            assert overview["bucketMs"] == MINUTE
            assert overview["topSessions"] == [{"sessionId": "s1", "peak": 2, "count": 2}]
            assert (await client.get("/v1/overview")).json()["bucketMs"] == MINUTE
            history = (await client.get("/v1/sessions/s1/history")).json()
            assert [p["count"] for p in history["points"]] == [1, 2]
            assert history == await ledger.dashboard.history("s1")

            for path, field in [
                ("/v1/overview?minutes=0", "minutes"),
                ("/v1/overview?minutes=1441", "minutes"),
                ("/v1/overview?buckets=721", "buckets"),
                ("/v1/overview?top=0", "top"),
                ("/v1/sessions/s1/history?points=0", "points"),
                ("/v1/sessions/s1/history?points=5001", "points"),
                ("/v1/sessions/a.b/history", "sessionId"),
            ]:
                response = await client.get(path)
                assert response.status_code == 422, path
                assert response.json()["field"] == field, path
