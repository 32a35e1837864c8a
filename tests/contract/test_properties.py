"""Property tests of the append path and the projection (CONTRACT 2.2, 2.4, 2.5, 5, 8 rebuild).

For any sequence of connection events over a small alphabet (1-3 sessions, 1-4 connection ids,
creates and destroys with random reasons, data and creation times), with some events repeated
verbatim, the whole shuffled and split into random batches, processed by the pipeline:

(a) the projection equals a reference fold (tests/reference.py) of the events in the order
    they were appended, duplicates ignored;
(b) every record's `count` is the reference fold's count right after that record;
(c) positions are gap-free 1..N over the whole ledger, sequences gap-free per session;
(d) `rebuild()` leaves the projection tables exactly as they were;
(e) time travel: at every position of the example, each session's count and live set (asked
    with `at`) equal the reference fold of the records up to that position, and `asOf` the
    last record's recordedAt answers as of the head;
(f) usage: over windows that cut connections at both ends (and an empty one, and the whole
    life), each session's usage equals a brute-force fold of the replayed records
    (tests/reference.py), vetoes and out-of-order timestamps included: the events' timestamps
    follow the order they were drawn in, not the order they are appended in.

A variant runs a hook that prevents every event whose `data` contains "bot": such events are
recorded (with their decision) but change nothing and leave no tombstone.

Hypothesis runs many examples against one function-scoped ledger, so each example writes into
sessions of its own (a fresh uuid prefix) and compares that namespace only; positions are
checked against the head the ledger had before the example.
"""

from __future__ import annotations

import uuid
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from service.app.bootstrap import open_ledger
from service.inbound import Incoming
from service.ledger.model import Appended, Duplicate
from service.ledger.records import record_to_dict
from service.pipeline.ledger_service import LedgerService
from service.pipeline.queries import AsOf, UsageWindow
from service.settings import Settings
from tests.helpers import EVENT_TIMES_THAT_DIFFER
from tests.reference import CREATED, DESTROYED, ReferenceFold, Step, live_at, usage_by_fold

HOOK = "tests.contract.test_properties:prevent_bots"
REASONS = ["clientDisconnected", "forceDisconnected", "networkDisconnected"]
PLAIN_DATA = [None, "name=Ana", "name=Bo"]
BOT_DATA = ["role=bot", "bot:recorder"]


def prevent_bots(event: Any) -> None:
    data = event.connection.data
    if data is not None and "bot" in data:
        event.preventDefault()


def _examples(n: int) -> hypothesis_settings:
    return hypothesis_settings(
        max_examples=n,
        deadline=None,
        derandomize=True,  # the same examples on every run: the suite stays deterministic
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@dataclass(frozen=True, slots=True)
class Spec:
    """One distinct event of a scenario; its id and session names come from the example."""

    type: str
    session: int
    connection: int
    creation_time: int
    data: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Scenario:
    sessions: int
    events: list[Spec]
    # Indices into `events`, duplicates included, in the order they are sent, split in batches.
    batches: list[list[int]]


@st.composite
def scenarios(draw: st.DrawFn, *, bots: bool) -> Scenario:
    sessions = draw(st.integers(1, 3), label="sessions")
    connections = draw(st.integers(1, 4), label="connections")
    datas = PLAIN_DATA + BOT_DATA if bots else PLAIN_DATA

    def spec(type_: str) -> st.SearchStrategy[Spec]:
        return st.builds(
            Spec,
            type=st.just(type_),
            session=st.integers(0, sessions - 1),
            connection=st.integers(0, connections - 1),
            creation_time=st.integers(1_000, 1_005),
            data=st.sampled_from(datas),
            reason=st.sampled_from(REASONS) if type_ == DESTROYED else st.none(),
        )

    events = draw(st.lists(spec(CREATED) | spec(DESTROYED), min_size=1, max_size=30), label="events")
    repeats = draw(st.lists(st.integers(0, len(events) - 1), max_size=10), label="duplicates")
    sent = draw(st.permutations(list(range(len(events))) + repeats), label="order")
    batches: list[list[int]] = []
    while len(sent) > sum(map(len, batches)):
        start = sum(map(len, batches))
        size = draw(st.integers(1, min(12, len(sent) - start)), label="batch")
        batches.append(list(sent[start : start + size]))
    return Scenario(sessions, events, batches)


async def _rows(ledger: LedgerService, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with ledger.store.engine.connect() as connection:
        return [tuple(r) for r in (await connection.execute(text(sql), params)).all()]


async def _projection(ledger: LedgerService, where: str = "", **params: Any) -> tuple[list[Any], list[Any]]:
    connections = await _rows(
        ledger,
        "SELECT session_id, connection_id, live, creation_time, data, created_position, "
        f"destroyed_position, reason FROM projection_connections {where} ORDER BY 1, 2",
        **params,
    )
    sessions = await _rows(
        ledger, f"SELECT session_id, count FROM projection_sessions {where} ORDER BY 1", **params
    )
    # SQLite hands booleans back as 0/1.
    return [(*r[:2], bool(r[2]), *r[3:]) for r in connections], sessions


async def _records_after(ledger: LedgerService, after: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with aclosing(ledger.store.records(after=after)) as pages:
        async for rows in pages:
            out.extend(record_to_dict(r) for r in rows)
    return out


async def check(ledger: LedgerService, scenario: Scenario, *, hooked: bool) -> None:
    namespace = uuid.uuid4().hex[:12]
    session_names = [f"{namespace}-S{k}" for k in range(scenario.sessions)]
    ids = [f"{namespace}-e{i}" for i in range(len(scenario.events))]
    raws = [
        orjson.dumps(
            {
                "id": ids[i],
                "type": spec.type,
                "sessionId": session_names[spec.session],
                "timestamp": 1_732_700_000_000 + i,
                "connection": {
                    "connectionId": f"c{spec.connection}",
                    "creationTime": spec.creation_time,
                    "data": spec.data,
                },
                **({"reason": spec.reason} if spec.reason is not None else {}),
            }
        )
        for i, spec in enumerate(scenario.events)
    ]
    (head_before,) = (await _rows(ledger, "SELECT coalesce(max(position), 0) FROM connection_ledger"))[0]

    # The order the events get appended in: each one where it is first sent.
    appended_order = list(dict.fromkeys(i for batch in scenario.batches for i in batch))
    position_of = {i: head_before + 1 + k for k, i in enumerate(appended_order)}
    fold = ReferenceFold()
    expected_counts: dict[int, int] = {}
    prevented: dict[int, bool] = {}
    for i in appended_order:
        spec = scenario.events[i]
        prevented[i] = hooked and spec.data is not None and "bot" in spec.data
        expected_counts[i] = fold.apply(
            Step(
                position_of[i],
                session_names[spec.session],
                spec.type,
                f"c{spec.connection}",
                spec.creation_time,
                spec.data,
                spec.reason,
                prevented[i],
            )
        )

    seen: set[int] = set()
    for batch in scenario.batches:
        result = await ledger.pipeline.process([Incoming(raws[i], 1_732_700_000_000, "test") for i in batch])
        expected_outcomes: list[Any] = []
        for i in batch:
            if i in seen:
                expected_outcomes.append(Duplicate(position_of[i]))
            else:
                seen.add(i)
                expected_outcomes.append(
                    Appended(position_of[i], 0, expected_counts[i], prevented[i])  # sequence below
                )
        # The sequence is checked on the records; compare the rest of each outcome here.
        got = [
            Appended(o.position, 0, o.count, o.prevented) if isinstance(o, Appended) else o
            for o in result.outcomes
        ]
        assert got == expected_outcomes

    # (c) gap-free positions over the whole ledger, and per-session sequences.
    total = head_before + len(appended_order)
    assert await _rows(ledger, "SELECT count(*), min(position), max(position) FROM connection_ledger") == [
        (total, 1, total)
    ]
    records = await _records_after(ledger, head_before)
    assert [r["position"] for r in records] == list(range(head_before + 1, total + 1))
    assert [r["id"] for r in records] == [ids[i] for i in appended_order]
    for session in session_names:
        sequences = [r["sequence"] for r in records if r["sessionId"] == session]
        assert sequences == list(range(1, len(sequences) + 1)), session

    # (b) each record's count, and the hooks' decision on it.
    for record, i in zip(records, appended_order, strict=True):
        assert record["count"] == expected_counts[i], record
        assert record["defaultPrevented"] is prevented[i]
        assert record["preventedBy"] == (HOOK if prevented[i] else None)

    # (a) the projection of this example's namespace equals the reference fold.
    connections, sessions = await _projection(ledger, "WHERE session_id LIKE :p", p=f"{namespace}-%")
    assert connections == fold.connection_rows()
    stored_counts = dict(sessions)
    assert set(stored_counts) <= set(session_names)
    for session in session_names:
        # A session with no projection row counts 0 (the contract: 0, not an error).
        assert stored_counts.get(session, 0) == fold.count(session), session
        assert (await ledger.queries.count(session))["count"] == fold.count(session)
    if hooked:
        # Prevented events leave nothing behind: no row names a connection only they touched.
        touched = {
            (session_names[scenario.events[i].session], f"c{scenario.events[i].connection}")
            for i in appended_order
            if not prevented[i]
        }
        assert {(r[0], r[1]) for r in connections} == touched

    await check_history(ledger, records, session_names, total)

    # (d) rebuild reproduces the live projection exactly (the whole database, every namespace).
    # The connections' event times (for usage) are those of the records at their positions,
    # on ingest and after the rebuild.
    live = await _projection(ledger)
    assert await _rows(ledger, EVENT_TIMES_THAT_DIFFER) == []
    assert await ledger.store.rebuild() == total
    assert await _projection(ledger) == live
    assert await _rows(ledger, EVENT_TIMES_THAT_DIFFER) == []


async def check_history(
    ledger: LedgerService, records: list[dict[str, Any]], session_names: list[str], head: int
) -> None:
    queries = ledger.queries
    for position in range(records[0]["position"] - 1, head + 1):
        for session in session_names:
            count, live = live_at(records, session, position)
            answer = await queries.connections(session, AsOf(at=position))
            assert (answer["count"], answer["position"]) == (count, position), (session, position)
            assert [c["connectionId"] for c in answer["connections"]] == live, (session, position)
            assert (await queries.count(session, AsOf(at=position)))["count"] == count
    last = records[-1]
    answer = await queries.count(last["sessionId"], AsOf(as_of=last["recordedAt"]))
    assert answer["position"] == head

    base = 1_732_700_000_000
    n = len(records)
    windows = [
        (0, base + n + 10),
        (base + n // 3, base + 2 * n // 3 + 1),
        (base + 1, base + max(1, n - 1)),
        (base + 2, base + 2),
    ]
    for start, end in windows:
        for session in session_names:
            got = await queries.usage(session, UsageWindow(start, end))
            assert got.pop("position") == head
            assert got == usage_by_fold(records, session, start, end), (session, start, end)


@pytest.fixture
async def hooked_ledger(settings: Settings) -> Any:
    async with open_ledger(settings.model_copy(update={"hooks": HOOK})) as opened:
        yield opened


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@_examples(60)
@given(scenario=scenarios(bots=False))
async def test_the_projection_is_the_fold_of_the_ledger_on_sqlite(
    ledger: LedgerService, scenario: Scenario
) -> None:
    await check(ledger, scenario, hooked=False)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@_examples(25)
@given(scenario=scenarios(bots=False))
async def test_the_projection_is_the_fold_of_the_ledger_on_postgresql(
    ledger: LedgerService, scenario: Scenario
) -> None:
    await check(ledger, scenario, hooked=False)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@_examples(40)
@given(scenario=scenarios(bots=True))
async def test_prevented_events_change_nothing_and_leave_no_tombstone_on_sqlite(
    hooked_ledger: LedgerService, scenario: Scenario
) -> None:
    await check(hooked_ledger, scenario, hooked=True)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@_examples(20)
@given(scenario=scenarios(bots=True))
async def test_prevented_events_change_nothing_and_leave_no_tombstone_on_postgresql(
    hooked_ledger: LedgerService, scenario: Scenario
) -> None:
    await check(hooked_ledger, scenario, hooked=True)
