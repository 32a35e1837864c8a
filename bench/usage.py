#!/usr/bin/env python3
"""Usage: `connledger usage` of every session over a ledger of a million events, beside
`connledger replay` of the same ledger, and one session's usage over HTTP beside its count, on
SQLite and on PostgreSQL.

    .venv/bin/python bench/usage.py                                  # both backends, 1M events
    .venv/bin/python bench/usage.py --backend postgresql --repeat 5
    .venv/bin/python bench/usage.py --events 100000 --repeat 1 --seconds 3        # short

The ledger, per backend, in a fresh database (untimed): the one bench/time_travel.py asks about
(bench/harness/history_ledger.py: --events generated events over --sessions sessions and a big
session of 1,000 connections, 3,000 events), cached under bench/.data/ and written by
`connledger import`. Then, each step a child process timed by wall clock, its peak RSS its own
(/usr/bin/time), --repeat times, medians printed:

1. baseline: `connledger replay > /dev/null`, the whole ledger: records/s;
2. `connledger usage > /dev/null`, every session's usage over its whole life (NDJSON): records
   of history/s (the head over the seconds), its ratio to replay's, and its peak RSS;
3. `connledger count x`: the command line's start-up, which both figures above include.

Checked, untimed: `connledger usage` writes one line per session with a record (the sessions
`GET /v1/sessions?active=false` lists), each with as many connections `open` as the session's
count; and `connledger usage --from F --to T` (a --window-minutes window of the ledger's event
time) gives, for --verify sessions and the big one, exactly what `GET
/v1/sessions/{id}/usage?from=F&to=T` answers.

Then, with `connledger serve` on the ledger (a nats-server of its own; once its relay has
published the imported ledger to NATS), one client (on uvloop) sends, in two windows of
--seconds after an untimed --warmup, each request without waiting for the ones before
(bench/harness/paced.py): --rate requests/s of the usage of a random session over a random
window of --window-minutes, then --big-rate of the big session's (some 2,000 lives, several
times the work), each taking turns with as many counts of a random session (the baseline: the
cheapest answer the service has); p50 and p99 of each.

Targets: `connledger usage` >= 200,000 records of history/s with a peak RSS < 150 MB; one
session's usage over HTTP at p99 < 20 ms. "wrong answers: N" counts the checks above and the
answers in the windows that were not about the session and window asked (a request unanswered
within 5 s is told apart); the exit status is 1 if N > 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness.cpu import ChildRun, run_child  # noqa: E402
from bench.harness.databases import add_database_arguments, backend_names  # noqa: E402
from bench.harness.figures import Figures, median_figures, say, table, verdict  # noqa: E402
from bench.harness.history_ledger import (  # noqa: E402
    BIG_SESSION,
    HistoryLedger,
    add_ledger_arguments,
    describe,
    event_span,
    history_file_of,
    imported_ledger,
)
from bench.harness.nats_server import NatsServer  # noqa: E402
from bench.harness.paced import HttpClient, Kind, paced  # noqa: E402
from bench.harness.service import Service, running_service  # noqa: E402
from bench.harness.traffic import run_in_folder  # noqa: E402

RATE_TARGET = 200_000.0
RSS_TARGET_MB = 150.0
P99_TARGET_MS = 20.0


def run_to(ledger: HistoryLedger, argv: tuple[str, ...], into: Path | None) -> ChildRun:
    with open(into or os.devnull, "wb") as out:
        return run_child(ledger.command(*argv), ledger.env, ledger.folder, out)


async def child(ledger: HistoryLedger, *argv: str, into: Path | None = None) -> ChildRun:
    """A command on the ledger, its output to `into` or to /dev/null."""
    return await asyncio.to_thread(run_to, ledger, argv, into)


async def commands(ledger: HistoryLedger, args: argparse.Namespace) -> list[Figures]:
    """Steps 1 to 3, --repeat times, taking turns."""
    runs = []
    for run in range(args.repeat):
        replay = await child(ledger, "replay")
        usage = await child(ledger, "usage")
        startup = await child(ledger, "count", "x")
        figures = {
            "replay_seconds": replay.seconds,
            "replay_rss_mb": replay.rss_mb,
            "usage_seconds": usage.seconds,
            "usage_rss_mb": usage.rss_mb,
            "startup_seconds": startup.seconds,
            "startup_rss_mb": startup.rss_mb,
        }
        say(f"  {ledger.backend}, run {run + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
        runs.append(figures)
    return runs


def read_usage(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """`connledger usage` output, removed once read: the answers by session, and its lines."""
    answers = {}
    lines = 0
    with path.open("rb") as out:
        for line in out:
            answer = orjson.loads(line)
            answers[answer["sessionId"]] = answer
            lines += 1
    path.unlink()
    return answers, lines


async def check(
    ledger: HistoryLedger, http: HttpClient, args: argparse.Namespace, span: tuple[int, int]
) -> tuple[int, dict[str, int], int]:
    """(lines written by `connledger usage`, the sessions with a record and their counts, wrong
    answers): see the module's doc."""
    wrong = 0
    sessions: dict[str, int] = {}
    cursor = ""
    while True:
        page = orjson.loads(
            await http.get(f"/v1/sessions?active=false&limit=1000{f'&cursor={cursor}' if cursor else ''}")
        )
        sessions |= {s["sessionId"]: s["count"] for s in page["sessions"]}
        if not page["next"]:
            break
        cursor = page["next"]
    whole = ledger.folder / "usage.ndjson"
    await child(ledger, "usage", into=whole)
    answers, lines = await asyncio.to_thread(read_usage, whole)
    if set(answers) != set(sessions) or lines != len(answers):
        say(f"  !!! usage wrote {lines} lines for {len(answers)} sessions; {len(sessions)} have a record")
        wrong += 1
    for session, count in sessions.items():
        if session in answers and answers[session]["open"] != count:
            wrong += 1
            if wrong <= 5:
                say(f"  !!! usage of {session}: {answers[session]['open']} open, its count is {count}")

    rng = random.Random(args.seed + 3)
    start = rng.randint(span[0], max(span[0], span[1] - args.window_minutes * 60_000))
    end = start + args.window_minutes * 60_000
    windowed = ledger.folder / "usage-window.ndjson"
    await child(ledger, "usage", "--from", str(start), "--to", str(end), into=windowed)
    answers, _ = await asyncio.to_thread(read_usage, windowed)
    picked = [*rng.sample(sorted(answers), min(args.verify, len(answers))), BIG_SESSION]
    for session in picked:
        got = orjson.loads(await http.get(f"/v1/sessions/{session}/usage?from={start}&to={end}"))
        if got != answers.get(session):
            wrong += 1
            say(f"  !!! {session} from {start} to {end}: HTTP {got}, connledger usage {answers.get(session)}")
    say(
        f"  {ledger.backend}: usage wrote {lines:,} lines, {len(sessions):,} sessions have a record; "
        f"{len(picked)} windowed answers compared with HTTP; {wrong} wrong"
    )
    return lines, sessions, wrong


async def requests(
    http: HttpClient, sessions: list[str], span: tuple[int, int], args: argparse.Namespace, run: int
) -> Figures:
    """Two windows of paced HTTP requests, each beside a random session's count (the baseline):
    a random session's usage at --rate, then the big session's at --big-rate; figures named
    `random_`, `count_`, `big_`, `big_count_`."""
    rng = random.Random(args.seed * 1000 + run)
    length = args.window_minutes * 60_000
    n = int(max(args.rate, args.big_rate) * (args.seconds + args.warmup)) + 2
    windows = [(s := rng.randint(span[0], max(span[0], span[1] - length)), s + length) for _ in range(n)]
    randoms = [rng.choice(sessions) for _ in range(n)]
    counted = [rng.choice(sessions) for _ in range(n)]

    def usage_of(session: Callable[[int], str], offset: int) -> Kind:
        def ask(i: int) -> Awaitable[bytes]:
            start, end = windows[i + offset]
            return http.get(f"/v1/sessions/{session(i + offset)}/usage?from={start}&to={end}")

        def right(i: int, body: bytes) -> bool:
            answer = orjson.loads(body)
            start, end = windows[i + offset]
            return (answer["sessionId"], answer["from"], answer["to"]) == (session(i + offset), start, end)

        return Kind(ask, right)

    def count(offset: int) -> Kind:
        return Kind(
            lambda i: http.get(f"/v1/sessions/{counted[i + offset]}/count"),
            lambda i, body: orjson.loads(body)["sessionId"] == counted[i + offset],
        )

    figures: Figures = {}
    for name, session, rate in (
        ("random", lambda i: randoms[i], args.rate),
        ("big", lambda i: BIG_SESSION, args.big_rate),
    ):
        warm = int(rate * args.warmup)
        if warm:
            await paced([usage_of(session, 0), count(0)], rate, args.warmup)
        usage, counts = await paced([usage_of(session, warm), count(warm)], rate, args.seconds)
        baseline = "count" if name == "random" else "big_count"
        figures |= {f"{name}_{k}": v for k, v in usage.figures().items()}
        figures |= {f"{baseline}_{k}": v for k, v in counts.figures().items()}
        say(
            f"    HTTP at {rate:g}/s: usage of {'a session' if name == 'random' else BIG_SESSION} "
            f"p50 {figures[name + '_p50']:.2f} p99 {figures[name + '_p99']:.2f} ms, count p50 "
            f"{figures[baseline + '_p50']:.2f} p99 {figures[baseline + '_p99']:.2f} ms"
        )
    return figures


async def bench_backend(name: str, args: argparse.Namespace, folder: Path, admin_url: str, path: Path) -> Any:
    work = folder / name
    (work / "nats").mkdir(parents=True)
    span = await asyncio.to_thread(event_span, path)
    async with imported_ledger(name, path, work, admin_url) as ledger:
        summary = ledger.summary
        if summary.get("rejected") or summary["appended"] + summary.get("duplicates", 0) != ledger.lines:
            raise SystemExit(f"{name}: the import of {ledger.lines:,} lines says {summary}")
        runs = await commands(ledger, args)
        async with NatsServer(work / "nats") as server:
            service = Service(server.url, ledger.url, work, "FULL", None, {"LEDGER_HOOKS": ""})
            async with running_service(service):
                relaying = await service.relayed(ledger.head)
                say(f"  {name}: the service relayed the ledger to NATS in {relaying:.1f} s (untimed)")
                http = HttpClient(service.http_url)
                try:
                    head = orjson.loads(await http.get(f"/v1/sessions/{BIG_SESSION}/count"))
                    if head != {"sessionId": BIG_SESSION, "count": args.big_live, "position": ledger.head}:
                        raise SystemExit(f"{name}: the service answers {head} for {BIG_SESSION}")
                    lines, sessions, wrong = await check(ledger, http, args, span)
                    names = sorted(set(sessions) - {BIG_SESSION})
                    for run in range(args.repeat):
                        runs[run] |= await requests(http, names, span, args, run)
                finally:
                    await http.close()
        return runs, ledger, lines, len(sessions), wrong


async def amain(args: argparse.Namespace, folder: Path, admin_url: str) -> dict[str, Any]:
    path = await asyncio.to_thread(history_file_of, args)
    return {
        name: await bench_backend(name, args, folder, admin_url, path) for name in backend_names(args.backend)
    }


def report(results: dict[str, Any], args: argparse.Namespace, command: str) -> int:
    print(f"\n{command}")
    some = next(iter(results.values()))[1]
    print(
        f"usage on {describe(some, args)}; HTTP: usage windows of {args.window_minutes} "
        f"minutes, {args.seconds:g} s of requests a session; medians of {args.repeat}, on "
        f"{os.cpu_count()} cores\n"
    )
    rows = []
    loud = []
    wrong_total = 0
    for name, (runs, ledger, lines, sessions, wrong) in results.items():
        m = median_figures(runs)
        ratio = statistics.median(r["replay_seconds"] / r["usage_seconds"] for r in runs)
        usage_rate = ledger.head / m["usage_seconds"]
        rows += [
            [
                name,
                "connledger usage > /dev/null, records/s",
                f"{usage_rate:,.0f} ({m['usage_seconds']:.2f} s)",
                f"replay {ledger.head / m['replay_seconds']:,.0f} ({m['replay_seconds']:.2f} s)",
                f"{ratio:.2f}",
                f">= {RATE_TARGET:,.0f}",
                verdict(usage_rate, RATE_TARGET, higher_is_better=True),
            ],
            [
                name,
                "connledger usage, peak RSS",
                f"{m['usage_rss_mb']:.0f} MB",
                f"replay {m['replay_rss_mb']:.0f} MB",
                f"{m['usage_rss_mb'] / m['replay_rss_mb']:.2f}",
                f"< {RSS_TARGET_MB:.0f} MB",
                verdict(m["usage_rss_mb"], RSS_TARGET_MB, higher_is_better=False),
            ],
            [
                name,
                "start-up (count x), in both",
                f"{m['startup_seconds']:.2f} s, {m['startup_rss_mb']:.0f} MB",
                "",
                "",
                "",
                "",
            ],
        ]
        for key, baseline, what, rate in (
            ("random", "count", "a session", args.rate),
            ("big", "big_count", f"{BIG_SESSION} ({args.big_live:,})", args.big_rate),
        ):
            rows.append(
                [
                    name,
                    f"HTTP usage of {what} at {rate:g}/s, p50 / p99 ms",
                    f"{m[key + '_p50']:.2f} / {m[key + '_p99']:.2f}",
                    f"count {m[baseline + '_p50']:.2f} / {m[baseline + '_p99']:.2f}",
                    f"{m[key + '_p99'] / m[baseline + '_p99']:.1f}",
                    f"p99 < {P99_TARGET_MS:g} ms",
                    verdict(m[key + "_p99"], P99_TARGET_MS, higher_is_better=False),
                ]
            )
            wrong_here = sum(r[f"{k}_wrong"] for r in runs for k in (key, baseline))
            unanswered = sum(r[f"{k}_failed"] for r in runs for k in (key, baseline))
            if wrong_here or unanswered:
                loud.append(
                    f"!!! {name}: HTTP usage of {what} and its count: {wrong_here:.0f} wrong answers, "
                    f"{unanswered:.0f} requests unanswered within 5 s"
                )
                wrong_total += int(wrong_here)
        loud.append(
            f"{name}: connledger usage wrote {lines:,} lines, one a session ({sessions:,} have a record); "
            f"{args.verify + 1} windowed answers compared with HTTP; {wrong} wrong"
        )
        wrong_total += wrong + (lines != sessions)
    table(["backend", "figure", "value", "baseline", "ratio", "target", "verdict"], rows, (2, 3, 4))
    print(
        "\nrecords/s: the ledger's head over the command's wall time (start-up included); ratio: usage's "
        "rate over replay's, or its RSS over replay's; HTTP: p99 over the count's, in the same window"
    )
    for line in loud:
        print(line)
    print(f"wrong answers: {wrong_total}")
    return wrong_total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_arguments(parser)
    add_ledger_arguments(parser)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command and HTTP window")
    parser.add_argument(
        "--rate", type=float, default=100, help="HTTP usage requests/s of a random session, and counts"
    )
    parser.add_argument(
        "--big-rate", type=float, default=20, help="HTTP usage requests/s of the big session, and counts"
    )
    parser.add_argument("--seconds", type=float, default=10, help="the HTTP window")
    parser.add_argument("--warmup", type=float, default=1, help="seconds untimed before it")
    parser.add_argument("--window-minutes", type=int, default=60, help="the usage window over HTTP")
    parser.add_argument("--verify", type=int, default=25, help="sessions whose usage is compared with HTTP")
    args = parser.parse_args()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    results = run_in_folder("bench-usage-", args, amain)
    if report(results, args, command):
        sys.exit(1)


if __name__ == "__main__":
    main()
