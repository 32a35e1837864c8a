"""The ledger's promises (CONTRACT sections 2, 5, 6, 9), run unchanged on every backend."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from service.app.bootstrap import open_ledger
from service.errors import RejectCode
from service.ledger import store as store_module
from service.ledger.append import FOLD_CHUNK
from service.ledger.model import Appended, Duplicate, Rejected
from service.ledger.records import record_to_dict, rejected_to_dict
from service.pipeline.ledger_service import LedgerService
from service.pipeline.outcomes import IgnoredInput
from service.settings import Settings
from tests.helpers import EVENT_TIMES_THAT_DIFFER, body, created, destroyed, incoming
from tests.reference import ReferenceFold, Step


async def records(ledger: LedgerService, **kw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with aclosing(ledger.store.records(**kw)) as pages:
        async for rows in pages:
            out.extend(record_to_dict(r) for r in rows)
    return out


async def rejections(ledger: LedgerService) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with aclosing(ledger.store.rejected()) as pages:
        async for rows in pages:
            out.extend(rejected_to_dict(r) for r in rows)
    return out


async def projection(ledger: LedgerService) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    async with ledger.store.engine.connect() as connection:
        conns = (
            await connection.execute(
                text(
                    "SELECT session_id, connection_id, live, creation_time, data, created_position, "
                    "destroyed_position, reason FROM projection_connections ORDER BY 1, 2"
                )
            )
        ).all()
        sessions = (
            await connection.execute(text("SELECT session_id, count FROM projection_sessions ORDER BY 1"))
        ).all()
    return (
        [(*r[:2], bool(r[2]), *r[3:]) for r in conns],
        [tuple(r) for r in sessions],
        await ledger.queries.head(),
    )


async def test_appends_get_gap_free_positions_and_per_session_sequences(ledger: LedgerService) -> None:
    result = await ledger.pipeline.process(
        [
            created("e1", "A", "a1"),
            created("e2", "B", "b1"),
            created("e3", "A", "a2"),
        ]
    )
    assert result.outcomes == [Appended(1, 1, 1), Appended(2, 1, 1), Appended(3, 2, 2)]
    result = await ledger.pipeline.process([destroyed("e4", "A", "a1"), created("e5", "B", "b2")])
    assert result.outcomes == [Appended(4, 3, 1), Appended(5, 2, 2)]
    assert result.head == 5
    rows = await records(ledger)
    assert [r["position"] for r in rows] == [1, 2, 3, 4, 5]
    assert [(r["sessionId"], r["sequence"], r["count"]) for r in rows] == [
        ("A", 1, 1),
        ("B", 1, 1),
        ("A", 2, 2),
        ("A", 3, 1),
        ("B", 2, 2),
    ]
    first = rows[0]
    assert first == {
        "position": 1,
        "sequence": 1,
        "id": "e1",
        "type": "connectionCreated",
        "sessionId": "A",
        "timestamp": 1_732_700_000_123,
        "recordedAt": first["recordedAt"],
        "connection": {"connectionId": "a1", "creationTime": 1_732_699_990_000, "data": "name=Ana"},
        "reason": None,
        "source": "native",
        "vendorReason": None,
        "origin": None,
        "defaultPrevented": False,
        "preventedBy": None,
        "count": 1,
    }
    assert isinstance(first["recordedAt"], int)
    assert rows[3]["reason"] == "clientDisconnected"


async def test_the_same_event_again_is_a_duplicate_forever_whatever_its_spelling(
    ledger: LedgerService,
) -> None:
    await ledger.pipeline.process([created("e1")])
    await ledger.pipeline.process([created("e2", connection="c2")])
    respelled = orjson.dumps(body("e1"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    result = await ledger.pipeline.process(
        [incoming(respelled), created("e1"), created("e3", connection="c3")]
    )
    assert result.outcomes == [Duplicate(1), Duplicate(1), Appended(3, 3, 3)]
    assert len(await records(ledger)) == 3
    assert await rejections(ledger) == []


async def test_a_duplicate_inside_one_batch_is_appended_once(ledger: LedgerService) -> None:
    result = await ledger.pipeline.process([created("e1"), created("e1"), destroyed("e2"), created("e1")])
    assert result.outcomes == [Appended(1, 1, 1), Duplicate(1), Appended(2, 2, 0), Duplicate(1)]


async def test_the_same_id_with_other_content_is_a_conflict_stored_whole(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1")])
    other = incoming(body("e1", data="name=Eve"), subject=None, source="import")
    result = await ledger.pipeline.process([other, created("e1", connection="c9")])
    assert [type(o) for o in result.outcomes] == [Rejected, Rejected]
    assert all(o.code is RejectCode.CONFLICT for o in result.outcomes if isinstance(o, Rejected))
    stored = await rejections(ledger)
    assert [s["code"] for s in stored] == ["conflict", "conflict"]
    assert stored[0]["field"] == "id"
    assert "position 1" in stored[0]["message"]
    import base64

    assert base64.b64decode(stored[0]["raw"]) == other.raw
    assert stored[0]["source"] == "import"
    assert len(await records(ledger)) == 1
    assert (await ledger.queries.count("s1"))["count"] == 1


async def test_a_batch_s_rejections_are_stored_in_arrival_order(ledger: LedgerService) -> None:
    """Conflicts are found under the writer lock, after the decode rejections: they are stored
    in the order the messages came all the same."""
    await ledger.pipeline.process([created("e1")])
    batch = [
        created("e1", data="other"),
        incoming(b"{not json"),
        created("e1", data="third"),
        incoming(b"[1]"),
    ]
    await ledger.pipeline.process(batch)
    stored = await rejections(ledger)
    assert [s["code"] for s in stored] == ["conflict", "malformed_json", "conflict", "invalid_field"]
    import base64

    assert [base64.b64decode(s["raw"]) for s in stored] == [m.raw for m in batch]


async def test_a_conflict_inside_one_batch(ledger: LedgerService) -> None:
    result = await ledger.pipeline.process([created("e1"), created("e1", data="else")])
    assert isinstance(result.outcomes[0], Appended)
    assert isinstance(result.outcomes[1], Rejected)
    assert result.outcomes[1].code is RejectCode.CONFLICT


async def test_invalid_input_is_stored_whole_and_the_good_input_beside_it_is_appended(
    ledger: LedgerService,
) -> None:
    bad = [
        incoming(b"{not json"),
        incoming(b"[1, 2]"),
        incoming(orjson.dumps({**body("x1"), "type": "connectionMoved"})),
        incoming(b"{" + b" " * 70_000 + b"}"),
        incoming(orjson.dumps(body("x2")), subject="connections.other.connectionCreated"),
        incoming(orjson.dumps({**body("x3"), "sessionId": "has.dot"})),
    ]
    batch = [bad[0], created("g1"), *bad[1:], created("g2", connection="c2")]
    result = await ledger.pipeline.process(batch)
    codes = [o.code.value if isinstance(o, Rejected) else type(o).__name__ for o in result.outcomes]
    assert codes == [
        "malformed_json",
        "Appended",
        "invalid_field",
        "unknown_type",
        "too_large",
        "subject_mismatch",
        "invalid_field",
        "Appended",
    ]
    stored = await rejections(ledger)
    assert [s["code"] for s in stored] == [c for c in codes if c != "Appended"]
    import base64

    assert [base64.b64decode(s["raw"]) for s in stored] == [m.raw for m in bad]
    assert stored[4]["subject"] == "connections.other.connectionCreated"
    assert all(s["message"] and s["receivedAt"] for s in stored)
    assert (await ledger.queries.count("s1"))["count"] == 2


async def test_ignored_vonage_events_are_counted_not_recorded(ledger: LedgerService) -> None:
    stream = {"sessionId": "s1", "projectId": "1", "event": "streamCreated", "timestamp": 5}
    result = await ledger.pipeline.process([incoming(stream)])
    assert result.outcomes == [IgnoredInput("streamCreated")]
    assert result.tally().ignored == 1
    assert await records(ledger) == []
    assert await rejections(ledger) == []


async def test_each_outcome_is_counted_in_the_metrics(ledger: LedgerService) -> None:
    stream = {"sessionId": "s1", "projectId": "1", "event": "streamCreated", "timestamp": 5}
    await ledger.pipeline.process(
        [
            created("e1"),
            created("e2", connection="c2"),
            created("e1"),
            incoming(b"{not json"),
            incoming(b"[]"),
            incoming(b"{}"),
            incoming(stream),
        ]
    )
    sample = ledger.metrics.registry.get_sample_value
    assert sample("ledger_events_appended_total") == 2
    assert sample("ledger_events_duplicate_total") == 1
    assert sample("ledger_events_ignored_total") == 1
    assert sample("ledger_events_rejected_total", {"code": "malformed_json"}) == 1
    assert sample("ledger_events_rejected_total", {"code": "invalid_field"}) == 2
    assert sample("ledger_events_prevented_total") == 0


async def test_a_vonage_retry_is_recorded_once(ledger: LedgerService) -> None:
    callback = {
        "sessionId": "s1",
        "projectId": "1",
        "event": "connectionCreated",
        "timestamp": 5,
        "connection": {"id": "v1", "createdAt": 4, "data": "d"},
    }
    for _ in range(3):
        await ledger.pipeline.process([incoming(callback)])
    rows = await records(ledger)
    assert len(rows) == 1
    assert rows[0]["connection"] == {"connectionId": "v1", "creationTime": 4, "data": "d"}
    assert (await ledger.queries.count("s1"))["count"] == 1


async def test_counts_never_go_negative_and_tombstones_keep_late_creates_out(ledger: LedgerService) -> None:
    await ledger.pipeline.process([destroyed("d1", connection="ghost")])
    await ledger.pipeline.process([destroyed("d2", connection="ghost", reason="networkDisconnected")])
    assert (await ledger.queries.count("s1"))["count"] == 0
    await ledger.pipeline.process([created("c1", connection="ghost")])
    answer = await ledger.queries.connections("s1")
    assert answer == {"sessionId": "s1", "count": 0, "position": 3, "connections": []}
    await ledger.pipeline.process([created("c2", connection="real"), created("c3", connection="real")])
    answer = await ledger.queries.connections("s1")
    assert answer["count"] == 1
    assert answer["connections"] == [
        {"connectionId": "real", "creationTime": 1_732_699_990_000, "data": "name=Ana"}
    ]
    assert answer["position"] == 5


async def test_a_session_with_no_connections_answers_zero(ledger: LedgerService) -> None:
    assert await ledger.queries.count("nobody") == {"sessionId": "nobody", "count": 0, "position": 0}
    assert await ledger.queries.connections("nobody") == {
        "sessionId": "nobody",
        "count": 0,
        "position": 0,
        "connections": [],
    }


async def test_session_listing_pages_and_all_adds_empty_sessions(ledger: LedgerService) -> None:
    batch = [created(f"e{i}", f"S{i:02d}", "c") for i in range(5)]
    batch += [destroyed("gone", "S03", "c")]
    await ledger.pipeline.process(batch)
    first = await ledger.queries.sessions(limit=2)
    assert first.sessions == [{"sessionId": "S00", "count": 1}, {"sessionId": "S01", "count": 1}]
    assert first.next is not None
    second = await ledger.queries.sessions(limit=2, cursor=first.next)
    assert second.sessions == [{"sessionId": "S02", "count": 1}, {"sessionId": "S04", "count": 1}]
    assert second.next is None
    everything = await ledger.queries.sessions(active=False, limit=100)
    assert [s["sessionId"] for s in everything.sessions] == ["S00", "S01", "S02", "S03", "S04"]
    assert everything.sessions[3] == {"sessionId": "S03", "count": 0}


async def test_records_after_a_position_for_one_session_and_with_a_limit(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created(f"e{i}", "AB"[i % 2], f"c{i}") for i in range(10)])
    assert [r["position"] for r in await records(ledger, after=7)] == [8, 9, 10]
    assert [r["position"] for r in await records(ledger, session_id="B", after=4)] == [6, 8, 10]
    assert [r["position"] for r in await records(ledger, limit=3, after=2)] == [3, 4, 5]
    assert [r["sequence"] for r in await records(ledger, session_id="A")] == [1, 2, 3, 4, 5]


async def test_rebuild_equals_the_live_projection(ledger: LedgerService) -> None:
    await ledger.pipeline.process(
        [
            created("1", "A", "a"),
            destroyed("2", "A", "b"),
            created("3", "A", "b"),
            created("4", "B", "x"),
            destroyed("5", "A", "a"),
            created("6", "A", "a"),
            created("7", "B", "y"),
            destroyed("8", "B", "x"),
            destroyed("9", "B", "x", reason="forceDisconnected"),
        ]
    )
    live = await projection(ledger)
    assert await _event_times_that_differ(ledger) == []
    assert await ledger.store.rebuild() == 9
    assert await projection(ledger) == live
    assert await _event_times_that_differ(ledger) == []
    assert live[1] == [("A", 0), ("B", 1)]
    # The rebuilt tables take appends as before (their keys are back: an upsert needs them),
    # and a second rebuild agrees with those too.
    await ledger.pipeline.process([destroyed("10", "B", "y"), created("11", "C", "z")])
    after = await projection(ledger)
    assert after[1] == [("A", 0), ("B", 0), ("C", 1)]
    assert await ledger.store.rebuild() == 11
    assert await projection(ledger) == after
    assert await _event_times_that_differ(ledger) == []


async def _event_times_that_differ(ledger: LedgerService) -> list[tuple[Any, ...]]:
    async with ledger.store.engine.connect() as connection:
        return [tuple(r) for r in (await connection.execute(text(EVENT_TIMES_THAT_DIFFER))).all()]


async def test_a_batch_larger_than_a_fold_chunk_equals_the_reference_fold(ledger: LedgerService) -> None:
    """A large batch writes its ledger rows a chunk at a time while the fold goes on; a small
    one writes them with the rest. Both, after each other, leave what the reference fold
    computes, and the second batch updates connections the first created."""
    steps = [(created(f"c{i}", f"s{i % 7}", f"k{i}"), "created") for i in range(FOLD_CHUNK * 2 + 1)]
    first = [message for message, _ in steps]
    second = [destroyed(f"d{i}", f"s{i % 7}", f"k{i}") for i in range(0, FOLD_CHUNK * 2 + 1, 3)]
    reference = ReferenceFold()
    position = 0
    for batch in (first, second):
        result = await ledger.pipeline.process(batch)
        for message, outcome in zip(batch, result.outcomes, strict=True):
            assert isinstance(outcome, Appended)
            position += 1
            document = orjson.loads(message.raw)
            expected = reference.apply(
                Step(
                    position,
                    document["sessionId"],
                    document["type"],
                    document["connection"]["connectionId"],
                    document["connection"]["creationTime"],
                    document["connection"]["data"],
                    document.get("reason"),
                )
            )
            assert (outcome.position, outcome.count) == (position, expected)
    connections, counts, head = await projection(ledger)
    assert head == position
    assert connections == sorted(reference.rows.values())
    assert counts == sorted((s, c) for s, c in reference.counts.items())


async def test_an_append_cancelled_halfway_commits_nothing_and_holds_no_lock(
    ledger: LedgerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = [created(f"e{i}", f"s{i % 11}", f"c{i}") for i in range(FOLD_CHUNK * 3)]
    inside = asyncio.Event()
    real_append = store_module.append_batch

    async def append_then_wait(*args: Any) -> Any:
        """Every row written, the transaction still open: the cancel lands here, for sure."""
        result = await real_append(*args)
        inside.set()
        await asyncio.Event().wait()
        return result

    monkeypatch.setattr(store_module, "append_batch", append_then_wait)
    prepared = await ledger.pipeline.prepare(batch)
    appending = asyncio.create_task(ledger.pipeline.commit(prepared))
    await asyncio.wait_for(inside.wait(), 30)
    appending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await appending
    monkeypatch.setattr(store_module, "append_batch", real_append)
    # Nothing of the batch was committed, and the writer lock is free at once: a transaction
    # left open would hold it.
    result = await asyncio.wait_for(ledger.pipeline.process([created("after", "other", "x")]), 10)
    assert result.outcomes == [Appended(1, 1, 1)]
    assert (await projection(ledger))[2] == 1
    assert [record["id"] for record in await records(ledger)] == ["after"]


async def test_the_ledger_refuses_update_and_delete(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1")])
    for statement in (
        "UPDATE connection_ledger SET data = 'x'",
        "DELETE FROM connection_ledger",
        "UPDATE connection_ledger SET count_after = 5 WHERE position = 1",
    ):
        with pytest.raises(Exception, match="append-only"):
            async with ledger.store.engine.begin() as connection:
                await connection.execute(text(statement))
    assert len(await records(ledger)) == 1


async def test_the_ledger_refuses_truncate_on_postgresql(ledger: LedgerService) -> None:
    if ledger.store.dialect != "postgresql":
        pytest.skip("SQLite has no TRUNCATE; DELETE without WHERE is refused instead")
    await ledger.pipeline.process([created("e1")])
    # Statement-level triggers: refused even when no row would be touched.
    for statement in ("TRUNCATE connection_ledger", "DELETE FROM connection_ledger WHERE position = 999"):
        with pytest.raises(Exception, match="append-only"):
            async with ledger.store.engine.begin() as connection:
                await connection.execute(text(statement))
    assert len(await records(ledger)) == 1


HOOKED: list[str] = []


def record_and_veto_recorders(event: Any) -> None:
    HOOKED.append(event.id)
    if event.connection.data and "recorder" in event.connection.data:
        event.preventDefault()


def always_fails(event: Any) -> None:
    raise RuntimeError("hook is down")


async def test_hooks_decide_once_and_their_decision_is_recorded(settings: Settings) -> None:
    HOOKED.clear()
    names = [
        "tests.contract.test_ledger:record_and_veto_recorders",
        "tests.contract.test_ledger:always_fails",
    ]
    hooked = settings.model_copy(update={"hooks": ",".join(names)})
    async with open_ledger(hooked) as ledger:
        result = await ledger.pipeline.process(
            [
                created("p1", connection="bot", data="role=recorder"),
                created("p2", connection="ana"),
            ]
        )
        assert result.outcomes == [Appended(1, 1, 0, prevented=True), Appended(2, 2, 1)]
        await ledger.pipeline.process(
            [
                created("p1", connection="bot", data="role=recorder"),
                destroyed("p3", connection="bot", data="role=recorder"),
            ]
        )
        assert HOOKED == ["p1", "p2", "p3"]  # the duplicate did not run the hooks again
        rows = await records(ledger)
        assert [(r["defaultPrevented"], r["preventedBy"]) for r in rows] == [
            (True, "tests.contract.test_ledger:record_and_veto_recorders"),
            (False, None),
            (True, "tests.contract.test_ledger:record_and_veto_recorders"),
        ]
        assert (await ledger.queries.count("s1"))["count"] == 1
        async with ledger.store.engine.connect() as connection:
            failures = (
                (
                    await connection.execute(
                        text("SELECT hook_failures FROM connection_ledger ORDER BY position")
                    )
                )
                .scalars()
                .all()
            )
        assert all("hook is down" in f for f in failures)
        assert orjson.loads(failures[0])[0]["hook"] == "tests.contract.test_ledger:always_fails"
        live = await projection(ledger)
        await ledger.store.rebuild()
        assert await projection(ledger) == live
    assert HOOKED == ["p1", "p2", "p3"]  # rebuild never calls hooks
