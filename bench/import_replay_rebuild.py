#!/usr/bin/env python3
"""Import, replay and rebuild a million realistic events, on SQLite and on PostgreSQL.

    .venv/bin/python bench/import_replay_rebuild.py                       # both backends, 1M events
    .venv/bin/python bench/import_replay_rebuild.py --backend sqlite --events 200000

For each backend, in a fresh database:

1. baseline: the ledger rows the import produced, bulk-inserted into a bare table (no index, no
   constraint) in transactions of --batch-size rows: `executemany` on SQLite, asyncpg's
   `copy_records_to_table` (COPY) on PostgreSQL, with the durability settings of the import;
   then the same into a table with the ledger's primary key and its two unique indexes (event id;
   session and sequence), what any append of these rows pays before a projection row is written;
2. `connledger import FILE` (run --import-runs times, each into a fresh database);
3. `connledger replay > /dev/null`;
4. `connledger rebuild`;
5. `connledger count x`, to show the fixed cost of starting the command line (imports,
   settings, the migration check) that every figure above includes.

Each step runs in a child process, timed by wall clock; its peak RSS is that child's own
(measured by /usr/bin/time). Steps 1, 3, 4 and 5 run --runs times and the median is printed. The input file is
generated once by service.simulation.traffic.generate and cached under bench/.data/.

With --verify, the replay output is also checked byte for byte against the records encoded one
by one in Python (records.record_json), and the projection after `rebuild` against the one the
import built.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness.cpu import ChildRun, run_child  # noqa: E402
from bench.harness.databases import (  # noqa: E402
    PostgresBackend,
    add_database_arguments,
    asyncpg_dsn,
    backend_names,
    postgres_server,
    remove_sqlite,
    sqlalchemy_url,
)
from bench.harness.figures import say, table  # noqa: E402
from bench.harness.service import CONNLEDGER  # noqa: E402
from bench.harness.traffic import DATA, traffic_file  # noqa: E402
from service.cli.importer import DEFAULT_BATCH_SIZE  # noqa: E402
from service.ledger.database import WAL_AUTOCHECKPOINT_PAGES  # noqa: E402
from service.ledger.records import RECORD_COLUMNS, record_json  # noqa: E402
from service.ledger.schema import LEDGER_COLUMNS  # noqa: E402


@dataclass
class Step:
    name: str
    unit: str
    count: int
    runs: list[ChildRun] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def rss_mb(self) -> float:
        return max(r.rss_mb for r in self.runs)


class Backend:
    name: str

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env["LEDGER_DATABASE_URL"] = self.url
        env["LEDGER_SQLITE_SYNCHRONOUS"] = self.args.synchronous
        return env

    url: str

    def fresh(self) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def ledger_rows(self) -> list[tuple[Any, ...]]:
        return self.fetch(f"SELECT {', '.join(LEDGER_COLUMNS)} FROM connection_ledger ORDER BY position")

    def baseline(self, rows: list[tuple[Any, ...]], batch: int, indexed: bool) -> float:
        """Seconds to bulk-insert `rows` into a bare table, or (indexed) into one with the
        ledger's primary key and unique indexes, in transactions of `batch` rows."""
        raise NotImplementedError

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError


class Sqlite(Backend):
    name = "sqlite"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.folder = Path(tempfile.mkdtemp(prefix="bench-sqlite-", dir=DATA))
        self.path = self.folder / "ledger.db"
        self.url = f"sqlite+aiosqlite:///{self.path}"

    def fresh(self) -> None:
        remove_sqlite(self.path)

    def drop(self) -> None:
        remove_sqlite(self.path)
        remove_sqlite(self.folder / "bare.db")
        self.folder.rmdir()

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as db:
            return db.execute(sql).fetchall()

    def baseline(self, rows: list[tuple[Any, ...]], batch: int, indexed: bool) -> float:
        bare = self.folder / "bare.db"
        remove_sqlite(bare)
        db = sqlite3.connect(bare, isolation_level=None)
        try:
            # The pragmas the service sets on its own connections (database.py).
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.args.synchronous}")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            if indexed:
                columns = ", ".join(
                    c if c != "position" else "position INTEGER PRIMARY KEY" for c in LEDGER_COLUMNS
                )
                db.execute(f"CREATE TABLE bare ({columns})")
                db.execute("CREATE UNIQUE INDEX bare_event_id ON bare (event_id)")
                db.execute("CREATE UNIQUE INDEX bare_session_sequence ON bare (session_id, sequence)")
            else:
                db.execute(f"CREATE TABLE bare ({', '.join(LEDGER_COLUMNS)})")
            insert = f"INSERT INTO bare VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})"
            started = time.perf_counter()
            for start in range(0, len(rows), batch):
                db.execute("BEGIN IMMEDIATE")
                db.executemany(insert, rows[start : start + batch])
                db.execute("COMMIT")
            return time.perf_counter() - started
        finally:
            db.close()
            remove_sqlite(bare)


class Postgres(Backend):
    name = "postgresql"

    def __init__(self, args: argparse.Namespace, admin_url: str) -> None:
        super().__init__(args)
        self.server = PostgresBackend(admin_url)
        # One database, made afresh for each import (the environment of the commands names it).
        self.database = self.server.new_name()
        self.dsn = asyncpg_dsn(admin_url, self.database)
        self.url = sqlalchemy_url(admin_url, self.database)

    def fresh(self) -> None:
        asyncio.run(self.server.create(self.database))

    def drop(self) -> None:
        asyncio.run(self.server.drop(self.url))

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        async def go() -> list[tuple[Any, ...]]:
            connection = await asyncpg.connect(self.dsn)
            try:
                return [tuple(r) for r in await connection.fetch(sql)]
            finally:
                await connection.close()

        return asyncio.run(go())

    def baseline(self, rows: list[tuple[Any, ...]], batch: int, indexed: bool) -> float:
        async def go() -> float:
            connection = await asyncpg.connect(self.dsn)
            try:
                # LIKE ... INCLUDING INDEXES: the primary key and the two unique indexes, not the
                # triggers.
                create = (
                    "CREATE TABLE bench_bare (LIKE connection_ledger INCLUDING INDEXES)"
                    if indexed
                    else "CREATE TABLE bench_bare AS SELECT * FROM connection_ledger WITH NO DATA"
                )
                await connection.execute(f"DROP TABLE IF EXISTS bench_bare; {create}")
                started = time.perf_counter()
                for start in range(0, len(rows), batch):
                    async with connection.transaction():
                        await connection.copy_records_to_table(
                            "bench_bare", records=rows[start : start + batch], columns=LEDGER_COLUMNS
                        )
                seconds = time.perf_counter() - started
                await connection.execute("DROP TABLE bench_bare")
                return seconds
            finally:
                await connection.close()

        return asyncio.run(go())


def projection_digest(backend: Backend) -> str:
    rows = backend.fetch(
        "SELECT session_id, connection_id, live, creation_time, data, created_position, "
        "destroyed_position, reason FROM projection_connections ORDER BY session_id, connection_id"
    )
    sessions = backend.fetch("SELECT session_id, count FROM projection_sessions ORDER BY session_id")
    digest = hashlib.sha256()
    for row in rows:
        digest.update(orjson.dumps([*row[:2], bool(row[2]), *row[3:]]))
    for row in sessions:
        digest.update(orjson.dumps(list(row)))
    return digest.hexdigest()


def verify_replay(backend: Backend, replayed: bytes) -> None:
    expected = b"".join(
        record_json(row) + b"\n"
        for row in backend.fetch(f"SELECT {RECORD_COLUMNS} FROM connection_ledger ORDER BY position")
    )
    if replayed != expected:
        raise SystemExit(f"{backend.name}: replay output differs from records.record_json")
    say(f"  verified: replay output = record_json, {len(expected)} bytes")


def bench(backend: Backend, path: Path, lines: int) -> list[Step]:
    args = backend.args
    env = backend.env()
    cli = [str(CONNLEDGER)]
    batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    steps: list[Step] = []
    say(f"{backend.name}:")

    imported = Step("import", "events/s", lines)
    summary: dict[str, int] = {}
    for attempt in range(args.import_runs):
        backend.fresh()
        run_child([*cli, "migrate"], env, DATA)  # untimed: the schema, not the import
        run = run_child([*cli, "import", str(path), *batch], env, DATA)
        imported.runs.append(run)
        summary = orjson.loads(run.stdout)
        say(f"  import #{attempt + 1}: {run.seconds:.1f} s {summary}")
    head = summary["appended"]

    rows = backend.ledger_rows()
    batch_rows = args.batch_size or DEFAULT_BATCH_SIZE
    baseline = Step(f"baseline ({batch_rows}/txn)", "rows/s", len(rows))
    indexed = Step("  with ledger indexes", "rows/s", len(rows))
    for _ in range(args.runs):
        baseline.runs.append(ChildRun(backend.baseline(rows, batch_rows, indexed=False), 0.0))
        indexed.runs.append(ChildRun(backend.baseline(rows, batch_rows, indexed=True), 0.0))
    del rows
    say(f"  baseline: {baseline.seconds:.1f} s, with the ledger's indexes {indexed.seconds:.1f} s")

    replay = Step("replay > /dev/null", "records/s", head)
    for attempt in range(args.runs):
        if args.verify and attempt == 0:
            run = run_child([*cli, "replay"], env, DATA)
            verify_replay(backend, run.stdout)
            run.stdout = b""
        else:
            with open(os.devnull, "wb") as null:
                run = run_child([*cli, "replay"], env, DATA, stdout=null)
        replay.runs.append(run)
    say(f"  replay: {replay.seconds:.1f} s")

    before = projection_digest(backend) if args.verify else ""
    rebuild = Step("rebuild", "events/s", head)
    for _ in range(args.runs):
        rebuild.runs.append(run_child([*cli, "rebuild"], env, DATA))
    if args.verify:
        if projection_digest(backend) != before:
            raise SystemExit(f"{backend.name}: the rebuilt projection differs from the live one")
        say("  verified: rebuilt projection = live projection")
    say(f"  rebuild: {rebuild.seconds:.1f} s")

    startup = Step("start-up (count x)", "", 1)
    for _ in range(args.runs):
        startup.runs.append(run_child([*cli, "count", "x"], env, DATA))

    steps.extend([baseline, indexed, imported, replay, rebuild, startup])
    return steps


def report(results: dict[str, list[Step]], lines: int, args: argparse.Namespace) -> None:
    print()
    print(
        f"{lines:,} events, batch size {args.batch_size or DEFAULT_BATCH_SIZE}, "
        f"SQLite synchronous={args.synchronous}, median of {args.runs} "
        f"(import: {args.import_runs}), on {os.cpu_count()} cores"
    )
    rows = []
    for name, steps in results.items():
        baseline = steps[0]
        for step in steps:
            rate = f"{step.rate:,.0f}" if step.unit else ""
            rss = f"{step.rss_mb:.0f} MB" if step.rss_mb else ""
            ratio = f"{step.rate / baseline.rate:.2f}" if step.name == "import" else ""
            if step.name == "import":
                ratio += f" {step.rate / steps[1].rate:.2f}"
            rows.append((name, step.name, f"{step.seconds:.2f}", rate, step.unit, rss, ratio))
    table(("backend", "step", "seconds", "rate", "unit", "peak RSS", "ratio"), rows, right=(2, 3, 5))
    print(
        "ratio: import events/s divided by the baseline rows/s of the same backend: into a bare "
        "table, then into one with the ledger's primary key and unique indexes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_arguments(parser)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3, help="runs of each cheap step (median printed)")
    parser.add_argument("--import-runs", type=int, default=1, help="imports, each into a fresh database")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="import --batch-size (default: the command's own)"
    )
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="SQLite durability")
    parser.add_argument("--verify", action="store_true", help="check replay and rebuild output too")
    args = parser.parse_args()

    path = traffic_file(args.events, args.seed)
    lines = args.events
    results: dict[str, list[Step]] = {}
    with contextlib.ExitStack() as stack:
        for name in backend_names(args.backend):
            if name == "sqlite":
                backend: Backend = Sqlite(args)
            else:
                backend = Postgres(args, stack.enter_context(postgres_server(args.pg_url)))
            try:
                results[name] = bench(backend, path, lines)
            finally:
                backend.drop()
    report(results, lines, args)


if __name__ == "__main__":
    main()
