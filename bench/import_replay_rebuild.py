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
import hashlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.cli.importer import DEFAULT_BATCH_SIZE  # noqa: E402
from service.ledger.database import WAL_AUTOCHECKPOINT_PAGES  # noqa: E402
from service.ledger.records import RECORD_COLUMNS, record_json  # noqa: E402
from service.ledger.schema import LEDGER_COLUMNS  # noqa: E402
from service.simulation.traffic import generate  # noqa: E402

DATA = ROOT / "bench" / ".data"
CONNLEDGER = Path(sys.executable).parent / "connledger"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


@dataclass
class Run:
    seconds: float
    rss_mb: float
    stdout: bytes = b""


@dataclass
class Step:
    name: str
    unit: str
    count: int
    runs: list[Run] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def rss_mb(self) -> float:
        return max(r.rss_mb for r in self.runs)


def input_file(events: int, seed: int) -> Path:
    """The NDJSON input, generated once and cached (written to a temporary name first, so that
    an interrupted run leaves no truncated file behind)."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"traffic-{events}-seed{seed}.ndjson"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        with partial.open("wb") as out:
            chunk: list[bytes] = []
            for line in generate(events, seed=seed):
                chunk.append(line)
                if len(chunk) == 10_000:
                    out.write(b"\n".join(chunk) + b"\n")
                    chunk.clear()
            if chunk:
                out.write(b"\n".join(chunk) + b"\n")
        partial.rename(path)
        print(f"generated {path.name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def run_child(argv: Sequence[str], env: dict[str, str], stdout: Any = subprocess.PIPE) -> Run:
    """Run a child to completion: its wall time and its own peak RSS.

    The peak is measured by /usr/bin/time, not by wait4() here: a child forked from this
    process (which holds the baseline's rows, hundreds of MB) starts with this process's
    pages, and Linux keeps that peak across exec; /usr/bin/time is small when it forks."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        command = [TIME, "-f", "%M", "-o", rss.name, *argv] if TIME else list(argv)
        started = time.perf_counter()
        child = subprocess.run(command, env=env, stdout=stdout, stderr=subprocess.PIPE, cwd=DATA)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            message = child.stderr.decode(errors="replace")
            raise SystemExit(f"{' '.join(argv)} failed ({child.returncode}):\n{message}")
        kib = int(rss.read().split()[-1]) if TIME else 0
    return Run(seconds, kib / 1024, child.stdout or b"")


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
        raise NotImplementedError

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

    def _remove(self, path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def fresh(self) -> None:
        self._remove(self.path)

    def drop(self) -> None:
        self._remove(self.path)
        self._remove(self.folder / "bare.db")
        self.folder.rmdir()

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as db:
            return db.execute(sql).fetchall()

    def ledger_rows(self) -> list[tuple[Any, ...]]:
        return self.fetch(f"SELECT {', '.join(LEDGER_COLUMNS)} FROM connection_ledger ORDER BY position")

    def baseline(self, rows: list[tuple[Any, ...]], batch: int, indexed: bool) -> float:
        bare = self.folder / "bare.db"
        self._remove(bare)
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
            self._remove(bare)


class Postgres(Backend):
    name = "postgresql"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.admin = args.pg_url
        self.database = f"bench_{uuid.uuid4().hex[:10]}"
        base, _, _ = self.admin.rpartition("/")
        self.dsn = f"{base}/{self.database}"
        self.url = self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def _admin(self, *statements: str) -> None:
        connection = await asyncpg.connect(self.admin)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    def fresh(self) -> None:
        asyncio.run(
            self._admin(
                f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)", f"CREATE DATABASE {self.database}"
            )
        )

    def drop(self) -> None:
        asyncio.run(self._admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"))

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        async def go() -> list[tuple[Any, ...]]:
            connection = await asyncpg.connect(self.dsn)
            try:
                return [tuple(r) for r in await connection.fetch(sql)]
            finally:
                await connection.close()

        return asyncio.run(go())

    def ledger_rows(self) -> list[tuple[Any, ...]]:
        return self.fetch(f"SELECT {', '.join(LEDGER_COLUMNS)} FROM connection_ledger ORDER BY position")

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
    print(f"  verified: replay output = record_json, {len(expected)} bytes", file=sys.stderr)


def bench(backend: Backend, path: Path, lines: int) -> list[Step]:
    args = backend.args
    env = backend.env()
    cli = [str(CONNLEDGER)]
    batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    steps: list[Step] = []
    print(f"{backend.name}:", file=sys.stderr)

    imported = Step("import", "events/s", lines)
    summary: dict[str, int] = {}
    for attempt in range(args.import_runs):
        backend.fresh()
        run_child([*cli, "migrate"], env)  # untimed: the schema, not the import
        run = run_child([*cli, "import", str(path), *batch], env)
        imported.runs.append(run)
        summary = orjson.loads(run.stdout)
        print(f"  import #{attempt + 1}: {run.seconds:.1f} s {summary}", file=sys.stderr)
    head = summary["appended"]

    rows = backend.ledger_rows()
    batch_rows = args.batch_size or DEFAULT_BATCH_SIZE
    baseline = Step(f"baseline ({batch_rows}/txn)", "rows/s", len(rows))
    indexed = Step("  with ledger indexes", "rows/s", len(rows))
    for _ in range(args.runs):
        baseline.runs.append(Run(backend.baseline(rows, batch_rows, indexed=False), 0.0))
        indexed.runs.append(Run(backend.baseline(rows, batch_rows, indexed=True), 0.0))
    del rows
    print(
        f"  baseline: {baseline.seconds:.1f} s, with the ledger's indexes {indexed.seconds:.1f} s",
        file=sys.stderr,
    )

    replay = Step("replay > /dev/null", "records/s", head)
    for attempt in range(args.runs):
        if args.verify and attempt == 0:
            run = run_child([*cli, "replay"], env)
            verify_replay(backend, run.stdout)
            run.stdout = b""
        else:
            with open(os.devnull, "wb") as null:
                run = run_child([*cli, "replay"], env, stdout=null)
        replay.runs.append(run)
    print(f"  replay: {replay.seconds:.1f} s", file=sys.stderr)

    before = projection_digest(backend) if args.verify else ""
    rebuild = Step("rebuild", "events/s", head)
    for _ in range(args.runs):
        rebuild.runs.append(run_child([*cli, "rebuild"], env))
    if args.verify:
        if projection_digest(backend) != before:
            raise SystemExit(f"{backend.name}: the rebuilt projection differs from the live one")
        print("  verified: rebuilt projection = live projection", file=sys.stderr)
    print(f"  rebuild: {rebuild.seconds:.1f} s", file=sys.stderr)

    startup = Step("start-up (count x)", "", 1)
    for _ in range(args.runs):
        startup.runs.append(run_child([*cli, "count", "x"], env))

    steps.extend([baseline, indexed, imported, replay, rebuild, startup])
    return steps


def report(results: dict[str, list[Step]], lines: int, args: argparse.Namespace) -> None:
    print()
    print(
        f"{lines:,} events, batch size {args.batch_size or DEFAULT_BATCH_SIZE}, "
        f"SQLite synchronous={args.synchronous}, median of {args.runs} "
        f"(import: {args.import_runs}), on {os.cpu_count()} cores"
    )
    columns = ("backend", "step", "seconds", "rate", "unit", "peak RSS", "ratio")
    header = "{:<11} {:<22} {:>8} {:>11} {:<10} {:>9} {:>10}".format(*columns)
    print(header)
    print("-" * len(header))
    for name, steps in results.items():
        baseline = steps[0]
        for step in steps:
            rate = f"{step.rate:,.0f}" if step.unit else ""
            rss = f"{step.rss_mb:.0f} MB" if step.rss_mb else ""
            ratio = f"{step.rate / baseline.rate:.2f}" if step.name == "import" else ""
            if step.name == "import":
                ratio += f" {step.rate / steps[1].rate:.2f}"
            seconds = f"{step.seconds:.2f}"
            print(f"{name:<11} {step.name:<22} {seconds:>8} {rate:>11} {step.unit:<10} {rss:>9} {ratio:>10}")
    print(
        "ratio: import events/s divided by the baseline rows/s of the same backend: into a bare "
        "table, then into one with the ledger's primary key and unique indexes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3, help="runs of each cheap step (median printed)")
    parser.add_argument("--import-runs", type=int, default=1, help="imports, each into a fresh database")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="import --batch-size (default: the command's own)"
    )
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="SQLite durability")
    parser.add_argument("--pg-url", default=os.environ.get("LEDGER_BENCH_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--verify", action="store_true", help="check replay and rebuild output too")
    args = parser.parse_args()

    path = input_file(args.events, args.seed)
    lines = args.events
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results: dict[str, list[Step]] = {}
    for name in names:
        backend: Backend = Sqlite(args) if name == "sqlite" else Postgres(args)
        try:
            results[name] = bench(backend, path, lines)
        finally:
            backend.drop()
    report(results, lines, args)


if __name__ == "__main__":
    main()
