#!/usr/bin/env python3
"""NATS ingest, publish-to-queryable latency and query load of `connledger serve`, against two
baselines, on SQLite and on PostgreSQL.

    .venv/bin/python bench/ingest_nats.py                          # both backends, 100k events
    .venv/bin/python bench/ingest_nats.py --backend sqlite --events 20000 --repeat 3

Each phase gets its own nats-server (JetStream, store in a temporary folder, free port) and,
where a database is used, a fresh one (a SQLite file in the temporary folder, or a PostgreSQL
database `bench_nats_<random>` that is dropped afterwards; with no server given, on an embedded
one started for the run). For each backend, these phases (--phases), each a module of
bench/phases/ whose docstring says what it measures:

1. client (client_ceiling.py): (a) a plain nats-py pull consumer, fetch(500) and ack; msg/s.
2. naive (naive_faststream.py): (b) FastStream, batch of one, one transaction per event; msg/s.
3. service (service_ingest.py): `connledger serve` reading N events waiting in the stream;
   sustained ev/s from recordedAt, wall time to the head, ratios to (a) and (b).
4. latency (latency.py): --latency-rate events/s for --latency-seconds, publish ->
   `ledger.records` p50/p90/p99/max, split at the append's start.
5. queries (queries.py): --query-rate count requests/s for --query-seconds under that ingest,
   against (c) a bare nats-py responder in alternate seconds of the same window.

Ingest's batches and messages come from the service's /metrics
(ledger_ingest_batches_total, ledger_ingest_messages_total).

Diagnostics: for each measured window the CPU used by the service (its relay process included),
its nats-server, PostgreSQL, this benchmark and every other process on the machine (a shared
machine is noisy: the last figure says how much); --profile-dir records each service with
py-spy (the serve process and its relay child). The benchmark's own clients run on uvloop.
Progress goes to stderr, the summary table to stdout. Timestamps of different processes are
compared on CLOCK_MONOTONIC (time.perf_counter on Linux). --repeat R runs every phase R times
and prints medians.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness.clock import now  # noqa: E402
from bench.harness.databases import (  # noqa: E402
    Backend,
    add_database_arguments,
    backend_names,
    make_backend,
    postgres_server,
)
from bench.harness.figures import Figures, median_figures, say, table  # noqa: E402
from bench.harness.service import add_service_arguments, parse_service_arguments  # noqa: E402
from bench.harness.traffic import make_traffic, run_loop, warm_up  # noqa: E402
from bench.phases import client_ceiling, latency, naive_faststream, queries, service_ingest  # noqa: E402
from bench.phases.context import Context, Rows  # noqa: E402

# In the order they run; each module has NAME, run() and report().
PHASES = [client_ceiling, naive_faststream, service_ingest, latency, queries]


async def bench_backend(ctx: Context, backend: Backend) -> dict[str, Figures]:
    results: dict[str, Figures] = {}
    for phase in PHASES:
        if phase.NAME not in ctx.args.phases:
            continue
        runs = []
        for attempt in range(ctx.args.repeat):
            started = now()
            figures = await phase.run(ctx, backend)
            runs.append(figures)
            shown = ", ".join(f"{k}={v:,.4g}" for k, v in figures.items())
            say(f"  {backend.name} {phase.NAME} #{attempt + 1} ({now() - started:.0f} s): {shown}")
        results[phase.NAME] = median_figures(runs)
    return results


def report(results: dict[str, dict[str, Figures]], ctx: Context, command: str) -> None:
    args = ctx.args
    rows = Rows()
    for backend, figures in results.items():
        for phase in PHASES:
            phase.report(rows, backend, figures, ctx)

    print()
    print(f"$ {command}")
    print(
        f"{len(ctx.traffic):,} events ({ctx.traffic.unique:,} unique), SQLite synchronous="
        f"{args.synchronous}, {'median of ' + str(args.repeat) if args.repeat > 1 else 'one run'} "
        f"per phase, {os.cpu_count()} cores; CPU in % of one core over the measured window"
    )
    table(("backend", "measure", "value", "target", "verdict / note"), rows.rows)


async def amain(
    args: argparse.Namespace, folder: Path, pg_url: str
) -> tuple[dict[str, dict[str, Figures]], Context]:
    say(f"generating {args.events:,} events (seed {args.seed}) ...")
    traffic = make_traffic(args.events, args.seed)
    paced = make_traffic(int(args.latency_rate * args.latency_seconds), args.seed + 1)
    # The queries phase's window: the service's seconds and the bare responder's, one second in,
    # and a spare.
    loaded = make_traffic(int(args.latency_rate * (2 * args.query_seconds + 2)), args.seed + 2)
    say(f"  {len(traffic):,} events, {traffic.unique:,} unique")
    results: dict[str, dict[str, Figures]] = {}
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, warm_up)  # spawn it before timing
        ctx = Context(args, folder, pool, traffic, paced, loaded)
        for name in args.backends:
            backend = make_backend(name, folder, pg_url, "bench_nats")
            say(f"{name}:")
            results[name] = await bench_backend(ctx, backend)
    return results, ctx


def main() -> None:
    names = [phase.NAME for phase in PHASES]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_arguments(parser)
    parser.add_argument("--events", type=int, default=100_000, help="events for phases 1-3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each phase (median printed)")
    parser.add_argument(
        "--phases", default=",".join(names), help="comma-separated subset of: " + ", ".join(names)
    )
    parser.add_argument("--naive-cap", type=int, default=20_000, help="messages for baseline (b)")
    parser.add_argument("--naive-seconds", type=float, default=60, help="time cap for baseline (b)")
    parser.add_argument("--latency-rate", type=float, default=2000, help="events/s in phases 4 and 5")
    parser.add_argument("--latency-seconds", type=float, default=15)
    parser.add_argument("--query-rate", type=float, default=1000, help="count requests/s in phase 5")
    parser.add_argument("--query-seconds", type=float, default=10)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="SQLite durability")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    add_service_arguments(parser)
    args = parse_service_arguments(parser)
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = args.phases - set(names)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    args.backends = backend_names(args.backend)

    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    command = shlex.join([python, *sys.argv])
    folder = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    try:
        with contextlib.ExitStack() as stack:
            # Only the naive phase and the service use a database: no server is needed otherwise.
            pg_url = ""
            if "postgresql" in args.backends and args.phases - {client_ceiling.NAME}:
                pg_url = stack.enter_context(postgres_server(args.pg_url))
            results, ctx = run_loop(amain(args, folder, pg_url))
    finally:
        if args.keep:
            say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    report(results, ctx, command)


if __name__ == "__main__":
    main()
