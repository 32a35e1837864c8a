#!/usr/bin/env python3
"""Time travel: a session's count and its connection set as of a past position (`at`), beside
the same query for now, over HTTP and over NATS, on SQLite and on PostgreSQL.

    .venv/bin/python bench/time_travel.py                          # both backends, 1M events, 3 runs
    .venv/bin/python bench/time_travel.py --backend sqlite --repeat 1
    .venv/bin/python bench/time_travel.py --events 100000 --repeat 1 --seconds 3    # short

The ledger, per backend, in a fresh database (untimed): --events generated events over
--sessions sessions (5,000), and one big session woven in (bench/harness/history_ledger.py)
whose 1,000 connections join over the first tenth of the ledger, after which one leaves and a
newcomer joins 1,000 times: it holds 999 or 1,000 connections at nearly any position, 1,000 at
the end. The file is cached under bench/.data/; `connledger import` writes it into the
database, and `connledger serve` (with a nats-server of its own) answers, once its relay has
published the imported ledger to NATS.

For each query, one client (on uvloop) sends --rate requests/s of it (connection sets:
--set-rate) and as many of its baseline, taking turns, for --seconds after an untimed --warmup,
each request without waiting for the ones before (bench/harness/paced.py), and records each
latency:

    count as of P        GET /v1/sessions/{id}/count?at=P, ledger.sessions.<id>.count {"at": P}
                         P uniform in 1..head, the session one with a record at or before P
      baseline (now)     the same without `at`, of a session drawn from all
    connection set of P  GET /v1/sessions/{big}?at=P, ledger.sessions.<big>.connections {"at": P}
      baseline (now)     the same without `at`

Printed: p50 and p99 of each, medians of --repeat runs, beside the baseline's, and the verdicts:
count as of a position p99 < 5 ms, connection set as of a position p99 < 20 ms. Every answer is
checked for its session, position and shape; then --verify positions of each query, and the
answers for now, are asked over both transports and compared with the fold of `connledger replay`
up to that position (history_ledger.Fold). "wrong answers: N"; the exit status is 1 if N > 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness.databases import add_database_arguments, backend_names  # noqa: E402
from bench.harness.figures import Figures, median_figures, say, table, verdict  # noqa: E402
from bench.harness.history_ledger import (  # noqa: E402
    BIG_SESSION,
    Fold,
    HistoryLedger,
    add_ledger_arguments,
    describe,
    history_file_of,
    imported_ledger,
    replay_lines,
)
from bench.harness.nats_server import NatsServer  # noqa: E402
from bench.harness.paced import HttpClient, Kind, paced  # noqa: E402
from bench.harness.service import Service, running_service  # noqa: E402
from bench.harness.traffic import run_in_folder  # noqa: E402

TARGETS_MS = {"count": 5.0, "connection set": 20.0}
QUERIES = ("count", "connection set")
TRANSPORTS = ("HTTP", "NATS")


def sessions_by_position(replayed: Path) -> list[str]:
    """The session of each record of a replay, by position (index 0: none)."""
    names: dict[str, str] = {}
    sessions = [""]
    with replayed.open("rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            if record["position"] != len(sessions):
                raise SystemExit(f"replay: position {record['position']} after {len(sessions) - 1}")
            session = record["sessionId"]
            sessions.append(names.setdefault(session, session))
    return sessions


class Queries:
    """One query over both transports: a session's count or connection set, now or as of P."""

    def __init__(self, http: HttpClient, nc: Client) -> None:
        self.http = http
        self.nc = nc

    async def ask(self, transport: str, query: str, session: str, at: int | None) -> bytes:
        if transport == "HTTP":
            path = f"/v1/sessions/{session}/count" if query == "count" else f"/v1/sessions/{session}"
            return await self.http.get(path if at is None else f"{path}?at={at}")
        subject = f"ledger.sessions.{session}.{'count' if query == 'count' else 'connections'}"
        body = b"" if at is None else orjson.dumps({"at": at})
        return (await self.nc.request(subject, body, timeout=5)).data


def right(answer: bytes, session: str, position: int, connections: int | None) -> bool:
    """The answer is about `session` as of `position`, and (for a connection set) lists as many
    connections as it counts, `connections` of them when given."""
    body = orjson.loads(answer)
    if body.get("sessionId") != session or body.get("position") != position:
        return False
    if "connections" not in body:
        return isinstance(body.get("count"), int)
    listed = len(body["connections"])
    return listed == body.get("count") and (connections is None or listed == connections)


async def measure(
    client: Queries, ledger: HistoryLedger, by_position: list[str], args: argparse.Namespace, run: int
) -> dict[str, Figures]:
    """One run: each query over each transport beside its baseline; figures by
    "<query>/<transport>", `at_` and `now_` prefixed."""
    rng = random.Random(args.seed * 1000 + run)
    head = ledger.head
    sessions = sorted(set(by_position[1:]))
    n = int(max(args.rate, args.set_rate) * (args.seconds + args.warmup)) + 2
    now_sessions = [rng.choice(sessions) for _ in range(n)]
    count_at = [(p, by_position[rng.randint(1, p)]) for p in (rng.randint(1, head) for _ in range(n))]
    set_at = [rng.randint(1, head) for _ in range(n)]
    live = args.big_live

    def kinds(transport: str, query: str, offset: int) -> list[Kind]:
        def ask(session: Callable[[int], str], at: Callable[[int], int | None]) -> Any:
            return lambda i: client.ask(transport, query, session(i + offset), at(i + offset))

        if query == "count":
            return [
                Kind(
                    ask(lambda i: count_at[i][1], lambda i: count_at[i][0]),
                    lambda i, a: right(a, count_at[i + offset][1], count_at[i + offset][0], None),
                ),
                Kind(
                    ask(lambda i: now_sessions[i], lambda i: None),
                    lambda i, a: right(a, now_sessions[i + offset], head, None),
                ),
            ]
        return [
            Kind(
                ask(lambda i: BIG_SESSION, lambda i: set_at[i]),
                lambda i, a: right(a, BIG_SESSION, set_at[i + offset], None),
            ),
            Kind(ask(lambda i: BIG_SESSION, lambda i: None), lambda i, a: right(a, BIG_SESSION, head, live)),
        ]

    figures: dict[str, Figures] = {}
    for transport in TRANSPORTS:
        for query in QUERIES:
            rate = args.rate if query == "count" else args.set_rate
            warm = int(rate * args.warmup)
            if warm:
                await paced(kinds(transport, query, 0), rate, args.warmup)
            at, now_ = await paced(kinds(transport, query, warm), rate, args.seconds)
            figures[f"{query}/{transport}"] = {
                **{f"at_{k}": v for k, v in at.figures().items()},
                **{f"now_{k}": v for k, v in now_.figures().items()},
            }
            m = figures[f"{query}/{transport}"]
            say(
                f"    {query} {transport}: as of P p50 {m['at_p50']:.2f} p99 {m['at_p99']:.2f} ms, "
                f"now p50 {m['now_p50']:.2f} p99 {m['now_p99']:.2f} ms"
            )
    return figures


async def verify(
    client: Queries, ledger: HistoryLedger, replayed: Path, by_position: list[str], args: argparse.Namespace
) -> tuple[int, int]:
    """(wrong answers, answers checked): --verify positions of each query and the answers for
    now, over both transports, against the fold of the replay."""
    rng = random.Random(args.seed + 7)
    head = ledger.head
    samples: list[tuple[int, str, str]] = []  # (position, query, session)
    for _ in range(args.verify):
        p = rng.randint(1, head)
        samples.append((p, "count", by_position[rng.randint(1, p)]))
        samples.append((rng.randint(0, head), "connection set", BIG_SESSION))
    samples.append((head, "connection set", BIG_SESSION))
    samples += [(head, "count", by_position[rng.randint(1, head)]) for _ in range(args.verify // 4)]
    samples.sort()

    def fold() -> list[dict[str, Any]]:
        folded = Fold()
        expected: list[dict[str, Any]] = []

        def expect(position: int, query: str, session: str) -> None:
            answer: dict[str, Any] = {
                "sessionId": session,
                "count": folded.count(session),
                "position": position,
            }
            if query == "connection set":
                answer["connections"] = folded.connections(session)
            expected.append(answer)

        k = 0
        with replayed.open("rb") as lines:
            for line in lines:
                record = orjson.loads(line)
                while k < len(samples) and record["position"] > samples[k][0]:
                    expect(*samples[k])
                    k += 1
                folded.apply(record)
        for sample in samples[k:]:
            expect(*sample)
        if folded.count(BIG_SESSION) != args.big_live:
            raise SystemExit(f"the fold leaves {BIG_SESSION} {folded.count(BIG_SESSION)} connections")
        return expected

    expected = await asyncio.to_thread(fold)
    wrong = checked = 0
    for (position, query, session), answer in zip(samples, expected, strict=True):
        for transport in TRANSPORTS:
            for at in (position, None) if position == head else (position,):
                got = orjson.loads(await client.ask(transport, query, session, at))
                checked += 1
                if got != answer:
                    wrong += 1
                    if wrong <= 5:
                        shown = {k: v for k, v in got.items() if k != "connections"}
                        say(f"  !!! {transport} {query} of {session} at {at}: {shown}, the fold: {answer}")
    return wrong, checked


async def bench_backend(
    name: str, args: argparse.Namespace, folder: Path, admin_url: str, path: Path
) -> tuple[list[dict[str, Figures]], int, int, HistoryLedger]:
    work = folder / name
    (work / "nats").mkdir(parents=True)
    async with imported_ledger(name, path, work, admin_url) as ledger:
        summary = ledger.summary
        if summary.get("rejected") or summary["appended"] + summary.get("duplicates", 0) != ledger.lines:
            raise SystemExit(f"{name}: the import of {ledger.lines:,} lines says {summary}")
        replayed = await asyncio.to_thread(replay_lines, ledger, work / "replay.ndjson")
        by_position = await asyncio.to_thread(sessions_by_position, replayed)
        if len(by_position) - 1 != ledger.head:
            raise SystemExit(
                f"{name}: replay gave {len(by_position) - 1:,} records, the head is {ledger.head:,}"
            )
        say(f"  {name}: head {ledger.head:,}, {len(set(by_position[1:])):,} sessions")
        async with NatsServer(work / "nats") as server:
            service = Service(server.url, ledger.url, work, "FULL", None, {"LEDGER_HOOKS": ""})
            async with running_service(service):
                relaying = await service.relayed(ledger.head)
                say(f"  {name}: the service relayed the ledger to NATS in {relaying:.1f} s (untimed)")
                nc = await nats.connect(server.url)
                http = HttpClient(service.http_url)
                client = Queries(http, nc)
                try:
                    big = orjson.loads(await client.ask("HTTP", "count", BIG_SESSION, None))
                    if big != {"sessionId": BIG_SESSION, "count": args.big_live, "position": ledger.head}:
                        raise SystemExit(f"{name}: the service answers {big} for {BIG_SESSION}")
                    runs = []
                    for run in range(args.repeat):
                        say(f"  {name}, run {run + 1}:")
                        runs.append(await measure(client, ledger, by_position, args, run))
                    wrong, checked = await verify(client, ledger, replayed, by_position, args)
                    say(f"  {name}: verified {checked} answers, {wrong} wrong")
                finally:
                    await http.close()
                    await nc.close()
        replayed.unlink()
        return runs, wrong, checked, ledger


async def amain(
    args: argparse.Namespace, folder: Path, admin_url: str
) -> dict[str, tuple[list[dict[str, Figures]], int, int, HistoryLedger]]:
    path = await asyncio.to_thread(history_file_of, args)
    results = {}
    for name in backend_names(args.backend):
        results[name] = await bench_backend(name, args, folder, admin_url, path)
    return results


def report(
    results: dict[str, tuple[list[dict[str, Figures]], int, int, HistoryLedger]],
    args: argparse.Namespace,
    command: str,
) -> int:
    print(f"\n{command}")
    some = next(iter(results.values()))[3]
    print(
        f"time travel on {describe(some, args)}; requests/s as of P and as many for now: "
        f"count {args.rate:g}, connection set {args.set_rate:g}; {args.seconds:g} s a window, "
        f"medians of {args.repeat}, on {os.cpu_count()} cores\n"
    )
    rows = []
    loud = []
    wrong_total = 0
    for name, (runs, wrong, checked, _) in results.items():
        medians = {key: median_figures([run[key] for run in runs]) for key in runs[0]}
        for query in QUERIES:
            for transport in TRANSPORTS:
                key = f"{query}/{transport}"
                m = medians[key]
                target = TARGETS_MS[query]
                what = f"{query} of {args.big_live:,}" if query == "connection set" else query
                rows.append(
                    [
                        name,
                        what,
                        transport,
                        f"{m['at_p50']:.2f} / {m['at_p99']:.2f}",
                        f"{m['now_p50']:.2f} / {m['now_p99']:.2f}",
                        f"{m['at_p99'] / m['now_p99']:.1f}",
                        f"< {target:g} ms",
                        verdict(m["at_p99"], target, higher_is_better=False),
                    ]
                )
                totals = {
                    k: sum(run[key][k] for run in runs)
                    for k in ("at_wrong", "now_wrong", "at_failed", "now_failed")
                }
                if any(totals.values()):
                    loud.append(
                        f"{name} {key}: as of P {totals['at_wrong']:.0f} wrong, "
                        f"{totals['at_failed']:.0f} unanswered; now {totals['now_wrong']:.0f} wrong, "
                        f"{totals['now_failed']:.0f} unanswered"
                    )
                    wrong_total += int(totals["at_wrong"] + totals["now_wrong"])
                lag = max(m["at_lag_p99"], m["now_lag_p99"])
                if lag > 5:
                    loud.append(f"{name} {key}: the client sent late, p99 {lag:.1f} ms (a busy machine)")
        wrong_total += wrong
        loud.append(f"{name}: {checked} answers compared with the fold of the replay, {wrong} wrong")
    table(
        [
            "backend",
            "query",
            "transport",
            "as of P p50 / p99 ms",
            "now p50 / p99 ms",
            "p99 ratio",
            "target (p99 as of P)",
            "verdict",
        ],
        rows,
        (3, 4, 5),
    )
    print(
        "\nas of P: P uniform in 1..head (count: a session with a record by then); now: the same "
        "query without `at` (count: of a random session), in the same window, taking turns"
    )
    for line in loud:
        print(("!!! " if "wrong" in line and not line.endswith(" 0 wrong") else "") + line)
    print(f"wrong answers: {wrong_total}")
    return wrong_total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_arguments(parser)
    add_ledger_arguments(parser)
    parser.add_argument(
        "--rate", type=float, default=200, help="count requests/s as of P, and as many for now"
    )
    parser.add_argument(
        "--set-rate", type=float, default=50, help="connection set requests/s as of P, and as many for now"
    )
    parser.add_argument("--seconds", type=float, default=10, help="a window, each query over each transport")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of each window untimed, before it")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--verify", type=int, default=50, help="positions of each query checked against the fold"
    )
    args = parser.parse_args()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    results = run_in_folder("bench-time-travel-", args, amain)
    if report(results, args, command):
        sys.exit(1)


if __name__ == "__main__":
    main()
