#!/usr/bin/env python3
"""Peak memory of `connledger reconcile` over a ledger of 100,000 active sessions, beside the
command line's own start-up (`connledger count x`) in the same run.

    .venv/bin/python bench/reconcile_memory.py                       # SQLite, 100,000 sessions
    .venv/bin/python bench/reconcile_memory.py --backend postgresql --pg-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/reconcile_memory.py --sessions 5000 --rate 1000     # short

Each run, in a fresh database: a generated NDJSON file of one connectionCreated a session
(session `room-<n>`, connection `PA_<n>`) is imported with `connledger import` (untimed), then
`connledger reconcile --platform livekit --interval 0 --rate R` runs as a child process against
a fake platform in a process of its own (bench/harness/platform_fake.py) that lists each
session's connection, except every --empty-every-th session's, whose connection is then a
ghost: two passes, the second destroys those. Printed, medians of --repeat runs: the child's
peak RSS (/usr/bin/time) and that of `connledger count x` on the same database (the baseline:
imports, settings, the migration check), the sessions looked at a second (two looks each, over
the command's wall time less the baseline's), what the reconcile reported, and the verdict
against the target: peak RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness.cpu import ChildRun, run_child  # noqa: E402
from bench.harness.databases import add_database_arguments, make_backend  # noqa: E402
from bench.harness.figures import Figures, median_figures, say, table, verdict  # noqa: E402
from bench.harness.platform_fake import EPOCH_MS, connection_id, fake_platform  # noqa: E402
from bench.harness.service import CONNLEDGER  # noqa: E402
from bench.harness.traffic import run_in_folder  # noqa: E402

RSS_TARGET_MB = 150.0
LIVEKIT_KEY, LIVEKIT_SECRET = "APIbench", "a-livekit-secret-of-the-benchmark-0123"


def session_file(folder: Path, sessions: int) -> Path:
    """One connectionCreated a session, as a native producer would send it."""
    path = folder / f"sessions-{sessions}.ndjson"
    with path.open("wb") as out:
        for n in range(sessions):
            at = EPOCH_MS + n
            body = {
                "id": f"created-{n}",
                "type": "connectionCreated",
                "sessionId": f"room-{n:07d}",
                "timestamp": at,
                "connection": {"connectionId": connection_id(n), "creationTime": at, "data": None},
            }
            out.write(orjson.dumps(body) + b"\n")
    return path


def environment(database_url: str, folder: Path, platform_url: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"LEDGER_DATABASE_URL": database_url, "LEDGER_VAR_DIR": str(folder / "var"), "LEDGER_HOOKS": ""}
    if platform_url:
        env |= {
            "LEDGER_LIVEKIT_URL": platform_url,
            "LEDGER_LIVEKIT_API_KEY": LIVEKIT_KEY,
            "LEDGER_LIVEKIT_API_SECRET": LIVEKIT_SECRET,
        }
    return env


async def one_run(args: argparse.Namespace, folder: Path, pg_url: str, ndjson: Path) -> Figures:
    backend = make_backend(args.backend, folder, pg_url, "bench_reconcile")
    cli = [str(CONNLEDGER)]
    async with backend.fresh() as url:
        env = environment(url, folder)
        await asyncio.to_thread(run_child, [*cli, "migrate"], env, folder)
        imported = await asyncio.to_thread(run_child, [*cli, "import", str(ndjson)], env, folder)
        say(f"  imported {args.sessions:,} sessions in {imported.seconds:.1f} s")
        baseline: ChildRun = await asyncio.to_thread(run_child, [*cli, "count", "x"], env, folder)
        with fake_platform("livekit", args.empty_every) as platform_url:
            command = [
                *cli,
                "reconcile",
                "--platform",
                "livekit",
                "--interval",
                "0",
                "--rate",
                str(args.rate),
            ]
            run = await asyncio.to_thread(
                run_child, [*command, "--json"], environment(url, folder, platform_url), folder
            )
    report = orjson.loads(run.stdout)
    looking = max(1e-9, run.seconds - baseline.seconds)
    return {
        "rss_mb": run.rss_mb,
        "baseline_rss_mb": baseline.rss_mb,
        "seconds": run.seconds,
        "baseline_seconds": baseline.seconds,
        "looks_per_second": 2 * report["sessions"] / looking,
        "sessions": report["sessions"],
        "errors": report["errors"],
        "destroyed": report["destroyed"],
        "appended": report["appended"],
    }


async def amain(args: argparse.Namespace, folder: Path, pg_url: str) -> list[Figures]:
    ndjson = await asyncio.to_thread(session_file, folder, args.sessions)
    runs = []
    for run in range(args.repeat):
        figures = await one_run(args, folder, pg_url, ndjson)
        say(f"run {run + 1}: " + ", ".join(f"{k}={v:,.4g}" for k, v in figures.items()))
        runs.append(figures)
    return runs


def report(runs: list[Figures], args: argparse.Namespace, command: str) -> None:
    m = median_figures(runs)
    ghosts = -(-args.sessions // args.empty_every) if args.empty_every else 0
    print(f"\n{command}")
    print(
        f"connledger reconcile --platform livekit over {args.sessions:,} active sessions on {args.backend}, "
        f"--rate {args.rate:g}, medians of {len(runs)}\n"
    )
    rows = [
        [
            "peak RSS, connledger reconcile (two passes)",
            f"{m['rss_mb']:.0f} MB",
            f"{m['baseline_rss_mb']:.0f} MB",
            f"{m['rss_mb'] / m['baseline_rss_mb']:.2f}",
            f"< {RSS_TARGET_MB:.0f} MB: {verdict(m['rss_mb'], RSS_TARGET_MB, higher_is_better=False)}",
        ],
        [
            "wall time",
            f"{m['seconds']:.1f} s",
            f"{m['baseline_seconds']:.2f} s",
            "",
            "",
        ],
        [
            "sessions looked at a second (two looks each)",
            f"{m['looks_per_second']:,.0f}",
            "",
            "",
            f"--rate {args.rate:g}",
        ],
    ]
    table(["figure", "reconcile", "count x (baseline)", "ratio", "target"], rows, (1, 2, 3))
    print(
        f"\nthe second pass: {m['sessions']:,.0f} sessions, {m['errors']:,.0f} failed looks, "
        f"{m['destroyed']:,.0f} ghosts destroyed ({ghosts:,} expected), {m['appended']:,.0f} appended"
    )
    if m["errors"] or m["destroyed"] != ghosts or m["sessions"] != args.sessions:
        print("!!! the reconcile did not do what the fake platform's lists call for")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_arguments(parser, both=False)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000, help="reconcile --rate: requests a second")
    parser.add_argument(
        "--empty-every", type=int, default=100, help="every n-th session's list is empty: a ghost (0: none)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    runs = run_in_folder("bench-reconcile-", args, amain)
    report(runs, args, command)


if __name__ == "__main__":
    main()
