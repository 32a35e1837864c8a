#!/usr/bin/env python3
"""Publish-to-record latency from the moment `connledger serve` says "ready", measured from
outside, against the same service's latency once it has run a while (the baseline, in the same
run).

    .venv/bin/python bench/ready_latency.py                          # both backends, 3 runs
    .venv/bin/python bench/ready_latency.py --backend postgresql --repeat 5

Each run starts a fresh nats-server and a fresh, unmigrated database, spawns `connledger serve`,
and waits for its "ready" line on stdout. At that instant a child process starts publishing at
--rate events/s (JetStream, paced) for --seconds; a core NATS subscription on
`ledger.records.>` stamps each event's record. Printed per backend, medians over --repeat runs:

- first record: from "ready" to the first record's arrival (the publisher, connected
  beforehand, publishes its first event at "ready");
- p50 / p99 / max of publish -> `ledger.records` for the events published in the first
  --early seconds after "ready" (what a client that trusts "ready" gets);
- the same for the events published after the first --early seconds (the steady state: the
  baseline);
- early p99 / steady p99: 1.0 means "ready" means ready.

Also: the seconds from spawning the process to "ready". Progress on stderr, the table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import shlex
import statistics
import sys
from pathlib import Path

import nats
import orjson
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.clock import now
from bench.harness.databases import (
    Backend,
    add_database_arguments,
    backend_names,
    make_backend,
)
from bench.harness.figures import say, spread_ms
from bench.harness.nats_server import NatsServer
from bench.harness.service import Service, add_service_arguments, parse_service_arguments, service_settings
from bench.harness.traffic import make_traffic, publish_paced, run_in_folder, warm_up

MS = 1000.0


async def one_run(
    args: argparse.Namespace, backend: Backend, folder: Path, pool: concurrent.futures.Executor, seed: int
) -> dict[str, float]:
    traffic = make_traffic(int(args.rate * args.seconds), seed)
    (folder / "nats").mkdir(parents=True)
    async with NatsServer(folder / "nats") as server, backend.fresh() as url:
        listener = await nats.connect(server.url)
        received: dict[str, float] = {}

        async def on_record(message: Msg) -> None:
            event_id = message.headers.get("Nats-Msg-Id") if message.headers else None
            if event_id is not None and event_id not in received:
                received[event_id] = now()

        await listener.subscribe("ledger.records.>", cb=on_record, pending_msgs_limit=1_000_000)
        await listener.flush()
        settings = service_settings(args)
        service = Service(server.url, url, folder, "FULL", settings=settings)
        try:
            # The publisher connects first and waits for the word: "ready" -> its first
            # publish is then the service's time, not the client's connect.
            go = folder / "go"
            publishing = publish_paced(pool, server.url, traffic, args.rate, 0.0, str(go))
            await service.start()
            ready = service.ready
            go.write_text(repr(ready))
            stamps = await asyncio.wait_for(publishing, args.seconds + 60)
            deadline = now() + 30
            while len(received) < traffic.unique and now() < deadline:
                service.check()
                await asyncio.sleep(0.1)
        finally:
            await listener.close()
            code = await service.stop()
            if code not in (0, None):
                say(f"  warning: serve exited {code}:\n{service.tail()}")
    early: list[float] = []
    steady: list[float] = []
    for index, event_id in enumerate(traffic.ids):
        if not traffic.positions[index] or event_id not in received:
            continue
        delay = received[event_id] - stamps[index]
        (early if stamps[index] - ready < args.early else steady).append(delay)
    first = min(received.values(), default=float("nan")) - ready
    return {
        "start": ready - service.spawned,
        "first": first * MS,
        **spread_ms(early, "early_", (50, 99)),
        **spread_ms(steady, "steady_", (50, 99)),
        "missing": traffic.unique - len(early) - len(steady),
    }


async def amain(args: argparse.Namespace, folder: Path, pg_url: str) -> dict[str, dict[str, float]]:
    names = backend_names(args.backend)
    results: dict[str, dict[str, float]] = {}
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, warm_up)
        for name in names:
            backend = make_backend(name, folder, pg_url, "bench_ready")
            runs = []
            for run in range(args.repeat):
                figures = await one_run(args, backend, folder / f"{name}-{run}", pool, args.seed + run)
                say(
                    f"{name} run {run + 1}: "
                    + orjson.dumps(figures, option=orjson.OPT_SERIALIZE_NUMPY).decode()
                )
                runs.append(figures)
            results[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    return results


def report(results: dict[str, dict[str, float]], args: argparse.Namespace, command: str) -> None:
    print(f"\n{command}")
    print(
        f'publish -> ledger.records at {args.rate:,.0f} events/s from "ready" on, medians of {args.repeat}\n'
    )
    names = list(results)
    print("| figure | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    rows = [
        ("spawn -> ready", "start", "{:.2f} s"),
        ('"ready" -> first record', "first", "{:.0f} ms"),
        (
            f"first {args.early:g} s after ready, p50 / p99 / max",
            ("early_p50", "early_p99", "early_max"),
            None,
        ),
        (
            f"after {args.early:g} s (baseline), p50 / p99 / max",
            ("steady_p50", "steady_p99", "steady_max"),
            None,
        ),
    ]
    for label, key, form in rows:
        if isinstance(key, tuple):
            cells = [" / ".join(f"{results[n][k]:.1f}" for k in key) + " ms" for n in names]
        else:
            cells = [form.format(results[n][key]) for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    ratios = [f"{results[n]['early_p99'] / results[n]['steady_p99']:.2f}" for n in names]
    print("| early p99 / baseline p99 | " + " | ".join(ratios) + " |")
    missing = [f"{results[n]['missing']:.0f}" for n in names]
    print("| records missing | " + " | ".join(missing) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_arguments(parser)
    parser.add_argument("--rate", type=float, default=2000, help="events/s")
    parser.add_argument("--seconds", type=float, default=15, help="publishing time")
    parser.add_argument("--early", type=float, default=2.0, help="seconds after ready counted as early")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    add_service_arguments(parser, profile=False)
    args = parse_service_arguments(parser)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    results = run_in_folder("bench-ready-", args, amain)
    report(results, args, command)


if __name__ == "__main__":
    main()
