"""Where one PostgreSQL writer tops out: every append takes the ledger's advisory lock for its
batch (positions are one gap-free sequence), so appenders on one database take turns.

    .venv/bin/python bench/writer_ceiling.py                 # 200,000 events, 3 runs
    .venv/bin/python bench/writer_ceiling.py --events 50000 --runs 1

For each run, on fresh databases: `connledger migrate`, then the same events appended by
`connledger import` (batches of --batch-size) as

- one writer: one process, all the events (the baseline);
- two writers: two processes at once, each half of the events (other sessions), one database;
- two databases: two processes at once, each half, each into a database of its own on the same
  server (what one ledger per partition would do).

Printed: events/s of each (medians), and the ratios to one writer. Two writers on one ledger
that reach no more than one show the lock as the ceiling; two databases show what the server
and the machine would give without it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.databases import PostgresBackend, postgres_server
from bench.harness.figures import say, table
from bench.harness.service import CONNLEDGER
from service.simulation.traffic import generate


def _write(path: Path, count: int, seed: int) -> None:
    with path.open("wb") as out:
        for line in generate(count, seed=seed, duplicate_rate=0, vonage_rate=0, recorder_rate=0):
            out.write(line + b"\n")


def _env(database_url: str, batch_size: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return {
        **base,
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_HOOKS": "",
        "LEDGER_BATCH_SIZE": str(batch_size),
    }


def _migrate(database_url: str, folder: Path) -> None:
    subprocess.run(
        [str(CONNLEDGER), "migrate"], env=_env(database_url, 1), cwd=folder, check=True, capture_output=True
    )


def _imports(jobs: list[tuple[str, Path]], folder: Path, batch_size: int) -> float:
    """Run the imports at once; seconds until the last one ends."""
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [str(CONNLEDGER), "import", "--json", "--batch-size", str(batch_size), str(path)],
            env=_env(url, batch_size),
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for url, path in jobs
    ]
    for child in children:
        _, errors = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"connledger import failed:\n{errors.decode(errors='replace')}")
    return time.perf_counter() - started


async def _run(args: argparse.Namespace) -> None:
    with (
        postgres_server(args.pg_url) as admin_url,
        tempfile.TemporaryDirectory(prefix="writer-ceiling-") as top,
    ):
        folder = Path(top)
        whole, first, second = folder / "all.ndjson", folder / "a.ndjson", folder / "b.ndjson"
        _write(whole, args.events, seed=1)
        _write(first, args.events // 2, seed=2)
        _write(second, args.events // 2, seed=3)
        backend = PostgresBackend(admin_url, "bench_writer")
        rates: dict[str, list[float]] = {"one writer": [], "two writers, one ledger": [], "two databases": []}
        for run in range(args.runs):
            async with backend.fresh() as one:
                _migrate(one, folder)
                rates["one writer"].append(args.events / _imports([(one, whole)], folder, args.batch_size))
            async with backend.fresh() as shared:
                _migrate(shared, folder)
                seconds = _imports([(shared, first), (shared, second)], folder, args.batch_size)
                rates["two writers, one ledger"].append(2 * (args.events // 2) / seconds)
            async with backend.fresh() as a, backend.fresh() as b:
                _migrate(a, folder)
                _migrate(b, folder)
                seconds = _imports([(a, first), (b, second)], folder, args.batch_size)
                rates["two databases"].append(2 * (args.events // 2) / seconds)
            say(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()))
        baseline = statistics.median(rates["one writer"])
        table(
            ["appending", "events/s (median)", "runs", "ratio to one writer"],
            [
                [
                    name,
                    f"{statistics.median(values):,.0f}",
                    " ".join(f"{v:,.0f}" for v in values),
                    f"{statistics.median(values) / baseline:.2f}",
                ]
                for name, values in rates.items()
            ],
            right=[1, 3],
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--pg-url", default=None, help="admin URL of a PostgreSQL server (else embedded)")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
