"""The in-memory counts of a serving process (pipeline/live_counts.py), on every backend.

Two ledgers opened on one database stand for two service instances: one of them serves the
counts, the other writes behind its back. Whatever the interleaving, once the follower has
caught up the counts equal the projection table, and the position they report is the head.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import text

from service.app.bootstrap import follow_counts, open_ledger
from service.errors import TransientError
from service.pipeline.ledger_service import LedgerService
from service.pipeline.live_counts import LiveCounts
from service.settings import Settings
from tests.helpers import created, destroyed

WAIT = 5.0


async def _projection(ledger: LedgerService) -> dict[str, int]:
    async with ledger.store.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT session_id, count FROM projection_sessions"))).all()
    return {session: int(count) for session, count in rows if count}


async def _all_counts(counts: LiveCounts, sessions: list[str]) -> dict[str, int]:
    answers = [await counts.count(s, None, WAIT) for s in sessions]
    return {a["sessionId"]: a["count"] for a in answers if a["count"]}


async def test_counts_start_from_what_is_already_in_the_ledger(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1"), created("e2", connection="c2"), created("e3", "s2")])
    async with follow_counts(ledger) as counts:
        assert await counts.count("s1", None, WAIT) == {"sessionId": "s1", "count": 2, "position": 3}
        assert (await counts.count("s2", None, WAIT))["count"] == 1
        assert await counts.count("nobody", None, WAIT) == {"sessionId": "nobody", "count": 0, "position": 3}


async def test_own_commits_are_reflected_as_soon_as_they_commit(ledger: LedgerService) -> None:
    async with follow_counts(ledger) as counts:
        await counts.count("s1", None, WAIT)  # loaded
        result = await ledger.pipeline.process([created("e1"), created("e2", connection="c2")])
        # No await between the commit and the read: the copy took the batch from the pipeline.
        assert counts.position == result.head == 2
        assert (await counts.count("s1", None, 0))["count"] == 2
        await ledger.pipeline.process([destroyed("e3"), destroyed("e4", connection="c2")])
        assert await counts.count("s1", None, 0) == {"sessionId": "s1", "count": 0, "position": 4}
        assert len(counts) == 0  # emptied sessions are not kept


async def test_another_writers_commits_are_followed(settings: Settings) -> None:
    async with (
        open_ledger(settings) as reader,
        open_ledger(settings, run_migrations=False) as writer,
        follow_counts(reader) as counts,
    ):
        await counts.count("s1", None, WAIT)
        result = await writer.pipeline.process([created("e1"), created("e2", "s2")])
        # Not told by the pipeline (another instance): found by polling, minPosition waits.
        answer = await counts.count("s2", result.head, WAIT)
        assert answer == {"sessionId": "s2", "count": 1, "position": 2}


async def test_a_gap_from_another_writer_is_filled_before_own_commits_are_answered(
    settings: Settings,
) -> None:
    slow = settings.model_copy(update={"follow_interval": 30.0})  # polling would not find it
    async with (
        open_ledger(slow) as reader,
        open_ledger(slow, run_migrations=False) as writer,
        follow_counts(reader) as counts,
    ):
        await counts.count("s1", None, WAIT)
        await writer.pipeline.process([created("e1"), created("e2", connection="c2")])
        # Our own batch comes after the other's: it cannot be applied until the gap is read,
        # and an answer never reflects less than this process has written.
        await reader.pipeline.process([created("e3", connection="c3")])
        answer = await counts.count("s1", None, WAIT)
        assert answer == {"sessionId": "s1", "count": 3, "position": 3}


async def test_while_own_commits_flow_the_follower_does_not_poll_yet_sees_other_writers(
    settings: Settings,
) -> None:
    quick = settings.model_copy(update={"follow_interval": 0.05})
    async with (
        open_ledger(quick) as reader,
        open_ledger(quick, run_migrations=False) as writer,
        follow_counts(reader) as counts,
    ):
        await counts.count("s1", None, WAIT)
        loop = asyncio.get_running_loop()
        reads, until, i = counts.reads, loop.time() + 0.6, 0
        while loop.time() < until:
            i += 1
            await reader.pipeline.process([created(f"own{i}", connection=f"c{i}")])
            if i == 5:
                await writer.pipeline.process([created("theirs", "s2")])
            await asyncio.sleep(0.005)
        # Polling every 0.05 s reads a dozen times in 0.6 s. Now: the one gap, and a poll after
        # any commit that took longer than the interval (a slow disk's fsync).
        assert counts.reads - reads <= 6
        answer = await counts.count("s2", None, WAIT)
        assert answer == {"sessionId": "s2", "count": 1, "position": i + 1}
        # Once own commits stop, polling resumes: another writer's commit is found unasked.
        await writer.pipeline.process([created("later", "s3")])
        for _ in range(100):
            if counts.position == i + 2:
                break
            await asyncio.sleep(0.02)
        assert (await counts.count("s3", None, 0))["count"] == 1


async def test_min_position_past_the_head_answers_after_the_wait_with_what_it_has(
    ledger: LedgerService,
) -> None:
    await ledger.pipeline.process([created("e1")])
    async with follow_counts(ledger) as counts:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await counts.count("s1", 50, 0.3)
        assert loop.time() - started >= 0.25
        assert answer == {"sessionId": "s1", "count": 1, "position": 1}


async def test_min_position_is_answered_as_soon_as_the_position_commits(ledger: LedgerService) -> None:
    async with follow_counts(ledger) as counts:
        await counts.count("s1", None, WAIT)
        waiting = asyncio.create_task(counts.count("s1", 2, WAIT))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await ledger.pipeline.process([created("e1"), created("e2", connection="c2")])
        assert await asyncio.wait_for(waiting, 1) == {"sessionId": "s1", "count": 2, "position": 2}


async def test_unreachable_database_is_a_transient_error_not_a_zero() -> None:
    from service.settings import load_settings

    broken = load_settings(
        database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none", hooks="", follow_interval=0.05
    )
    async with open_ledger(broken, run_migrations=False) as ledger, follow_counts(ledger) as counts:
        with pytest.raises(TransientError):
            await counts.count("s1", None, 0.3)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_interleaved_writers_leave_the_counts_equal_to_the_projection(
    settings: Settings, seed: int
) -> None:
    rng = random.Random(seed)
    sessions = [f"s{i}" for i in range(4)]
    connections = [f"c{i}" for i in range(5)]
    async with (
        open_ledger(settings) as reader,
        open_ledger(settings, run_migrations=False) as writer,
        follow_counts(reader) as counts,
    ):
        await counts.count("s0", None, WAIT)
        n = 0
        for _ in range(30):
            batch = []
            for _ in range(rng.randint(1, 6)):
                n += 1
                make = created if rng.random() < 0.6 else destroyed
                batch.append(make(f"e{n}", rng.choice(sessions), rng.choice(connections)))
                if rng.random() < 0.1:
                    batch.append(batch[-1])  # a duplicate
            await rng.choice([reader, writer]).pipeline.process(batch)
        head = await reader.queries.head()
        answer = await counts.count("s0", head, WAIT)
        assert answer["position"] == head
        assert await _all_counts(counts, sessions) == await _projection(reader)
