"""Several processes append to one PostgreSQL ledger at once while a reader tails it by
position (CONTRACT 2.4: positions global, from 1, no gaps, in commit order, so that a reader
that tails by position never skips a row; sequences per session from 1, no gaps; 2.2:
deduplication by id holds across writers; 2.5: the projection is the fold of the ledger).

Always runs against PostgreSQL: the fixtures supply a server (LEDGER_TEST_POSTGRES_URL or an
embedded one).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from service.ledger.database import create_engine, migrate
from tests.reference import ReferenceFold, Step

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
EVENTS_PER_WRITER = 2_000
SHARED = 100  # events every writer sends: each must land once
SEED = 20_261_127
TOTAL = WRITERS * EVENTS_PER_WRITER + SHARED


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _tail(dsn: str, writers: asyncio.Future[Any]) -> tuple[list[int], int]:
    """Tail connection_ledger by position until the writers are done, then once more.

    Returns every position seen, in the order seen, and how many polls returned rows."""
    observed: list[int] = []
    fruitful = 0
    last = 0
    reader = await asyncpg.connect(dsn)
    try:
        while True:
            finished = writers.done()
            rows = await reader.fetch(
                "SELECT position FROM connection_ledger WHERE position > $1 ORDER BY position", last
            )
            if rows:
                fruitful += 1
                observed.extend(row[0] for row in rows)
                last = rows[-1][0]
            if finished:
                return observed, fruitful
            await asyncio.sleep(0.002)
    finally:
        await reader.close()


async def test_concurrent_writers_get_gap_free_positions_a_tailing_reader_never_skips(
    fresh_postgres: str,
) -> None:
    engine = create_engine(fresh_postgres)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()

    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e.concurrent_writer",
            fresh_postgres,
            str(writer),
            str(EVENTS_PER_WRITER),
            str(SHARED),
            str(SEED),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for writer in range(WRITERS)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            ready = await asyncio.wait_for(process.stdout.readline(), 60)
            if ready != b"ready\n":
                _, stderr = await process.communicate()
                raise AssertionError(f"a writer did not start: {ready!r} {stderr.decode()}")
        # "go" to every writer at once; the reader tails until all have exited.
        writers = asyncio.gather(*(p.communicate(b"go\n") for p in processes))
        observed, fruitful = await asyncio.wait_for(_tail(_asyncpg_dsn(fresh_postgres), writers), 120)
        outputs = await writers
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    tallies = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
        tallies.append(orjson.loads(stdout.splitlines()[-1]))
    assert sum(t["appended"] for t in tallies) == TOTAL
    assert sum(t["duplicates"] for t in tallies) == (WRITERS - 1) * SHARED
    assert sum(t["rejected"] + t["ignored"] for t in tallies) == 0

    # The reader saw every position exactly once, each right after the one before.
    assert observed == list(range(1, TOTAL + 1))
    assert fruitful > 1, "the reader should have seen the ledger grow, not only its end"

    connection = await asyncpg.connect(_asyncpg_dsn(fresh_postgres))
    try:
        rows = await connection.fetch(
            "SELECT position, sequence, event_id, session_id, type, connection_id, creation_time, "
            "data, reason, default_prevented, count_after FROM connection_ledger ORDER BY position"
        )
        projection_connections = await connection.fetch(
            "SELECT session_id, connection_id, live, creation_time, data, created_position, "
            "destroyed_position, reason FROM projection_connections ORDER BY 1, 2"
        )
        projection_sessions = dict(
            await connection.fetch("SELECT session_id, count FROM projection_sessions")
        )
        ledger_sessions = dict(
            await connection.fetch("SELECT session_id, last_sequence FROM ledger_sessions")
        )
        checkpoint = await connection.fetchval(
            "SELECT position FROM projection_checkpoints WHERE name = 'connections'"
        )
    finally:
        await connection.close()

    assert [r["position"] for r in rows] == list(range(1, TOTAL + 1))
    expected_ids = {f"w{w}-{i}" for w in range(WRITERS) for i in range(EVENTS_PER_WRITER)}
    expected_ids |= {f"shared-{k}" for k in range(SHARED)}
    assert {r["event_id"] for r in rows} == expected_ids
    assert checkpoint == TOTAL

    # The writers really did interleave (batches commit whole, so count the hand-overs).
    owners = [r["event_id"].split("-")[0] for r in rows if not r["event_id"].startswith("shared-")]
    hand_overs = sum(1 for a, b in itertools.pairwise(owners) if a != b)
    assert hand_overs >= WRITERS, f"the writers barely overlapped ({hand_overs} hand-overs)"

    # Per-session sequences 1..k in position order, and the bookkeeping agrees.
    sequences: dict[str, list[int]] = {}
    for r in rows:
        sequences.setdefault(r["session_id"], []).append(r["sequence"])
    for session, seen in sequences.items():
        assert seen == list(range(1, len(seen) + 1)), session
    assert ledger_sessions == {s: len(seen) for s, seen in sequences.items()}

    # The projection and every record's count are the fold of the ledger in position order.
    fold = ReferenceFold()
    for r in rows:
        count = fold.apply(
            Step(
                r["position"],
                r["session_id"],
                r["type"],
                r["connection_id"],
                r["creation_time"],
                r["data"],
                r["reason"],
                r["default_prevented"],
            )
        )
        assert r["count_after"] == count, dict(r)
    assert [tuple(r) for r in projection_connections] == fold.connection_rows()
    for session in sequences:
        assert projection_sessions.get(session, 0) == fold.count(session), session
    assert set(projection_sessions) <= set(sequences)
