#!/usr/bin/env python3
"""Signed webhooks a second into one `connledger serve`, per platform, beside the same kind of
events posted natively to `POST /v1/events` in the same run (the same service, wrk connections
and duration).

    .venv/bin/python bench/webhooks.py                               # SQLite, 10 s a route
    .venv/bin/python bench/webhooks.py --repeat 3                    # medians of three
    .venv/bin/python bench/webhooks.py --backend postgresql --pg-url postgresql://postgres@127.0.0.1:5432/test

One nats-server, one fresh database, one service with every platform's secret set. The
requests are built before anything is timed, from service.simulation.webhook_traffic (what
`connledger simulate --platform` sends): each platform's webhooks signed as the platform signs
them (LiveKit's token valid for the whole run; Twilio's signature over LEDGER_PUBLIC_URL and
the path), and, as the platform's baseline, the same platform's traffic of another seed, each
webhook translated beforehand into the native body the service makes of it and posted to
`/v1/events`. The two carry the same kind of events (rooms, escaped names, identities, reasons),
so a pair differs by two things alone: checking the signature and translating the
body. Retries and the platforms' events the ledger ignores are left out, and no request is sent
twice: each one is an event the ledger has not seen, so each 2xx is a real append. wrk replays
them (bench/harness/replay_requests.lua) with --connections connections on --threads threads
for --seconds per window, each window only once ingest has appended the previous one's events.
The two windows of a pair run one right after the other (the native one first in one run, second
in the next), and a platform's ratio is the median over runs of its pair's ratio: on a machine
shared with other work, the load drifts between windows a minute apart, far less between two
adjacent ones.

Printed per route, medians of --repeat runs: requests/s, latency p50 / p90 / p99 (wrk's), the
ratio to the pair's native window, the service's CPU, its CPU time a request (and that time's
ratio to the pair's: what the signature and the translation cost, which the load of other work
on the machine sways less than the rate), and the targets' verdicts: a platform's rate >= 85 %
of its native twin's (signature and translation cost at most 15 %), >= 1,500 webhooks/s, and
p99 < 50 ms. Then, per window over all runs, what the service made of them: requests sent and
answered 2xx (a non-2xx is printed loudly), and the events appended, duplicates and rejections
from its /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness.clock import now  # noqa: E402
from bench.harness.cpu import CpuWindow  # noqa: E402
from bench.harness.databases import add_database_arguments, make_backend  # noqa: E402
from bench.harness.figures import Figures, median_figures, say, table, verdict  # noqa: E402
from bench.harness.metrics import value  # noqa: E402
from bench.harness.nats_server import NatsServer  # noqa: E402
from bench.harness.service import (  # noqa: E402
    PY_SPY,
    Service,
    add_service_arguments,
    parse_service_arguments,
    running_service,
    service_settings,
)
from bench.harness.traffic import run_in_folder  # noqa: E402
from bench.harness.wrk import REPLAY_SCRIPT, http_request, require_wrk, run_wrk, write_requests  # noqa: E402
from service.events import Ignored  # noqa: E402
from service.platforms import agora, livekit, twilio  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.simulation.webhook_traffic import webhook_requests  # noqa: E402

PLATFORMS = ("livekit", "twilio", "agora")
BASELINE = "events"
SECRETS = {
    "LEDGER_LIVEKIT_API_KEY": "APIbench",
    "LEDGER_LIVEKIT_API_SECRET": "a-livekit-secret-of-the-benchmark-0123",
    "LEDGER_TWILIO_AUTH_TOKEN": "0123456789abcdef0123456789abcdef",
    # Twilio signs the URL it called: the public one, as a proxy in front would have it.
    "LEDGER_PUBLIC_URL": "https://ledger.example.com",
    "LEDGER_AGORA_NCS_SECRET": "an-agora-ncs-secret-of-the-benchmark",
}
SIGNING = Settings.model_construct(**{k.removeprefix("LEDGER_").lower(): v for k, v in SECRETS.items()})
# The targets: a platform's rate against /v1/events's, webhooks a second, p99.
RATIO_TARGET, RATE_TARGET, P99_TARGET_MS = 0.85, 1500.0, 50.0


class Route(NamedTuple):
    name: str
    path: str
    requests: Iterator[tuple[dict[str, str], bytes]]  # (headers, body), each a new event


def _translated(platform: str, body: bytes) -> dict[str, Any] | Ignored:
    if platform == "livekit":
        return livekit.to_native(body)
    if platform == "twilio":
        return twilio.to_native(body, twilio.form(body))
    return agora.to_native(body)


def _platform_requests(
    platform: str, seed: int, sessions: int, token_seconds: int
) -> Iterator[tuple[dict[str, str], bytes]]:
    """The platform's signed requests, less its retries and the events the ledger ignores (the
    service's own translation says which)."""
    seen: set[str] = set()
    requests = webhook_requests(
        platform, SIGNING, seed=seed, sessions=sessions, epoch_ms=time.time_ns() // 1_000_000, now=time.time
    )
    for request in requests:
        native = _translated(platform, request.body)
        if isinstance(native, Ignored) or native["id"] in seen:
            continue
        seen.add(native["id"])
        headers = request.headers
        if platform == "livekit":
            # Signed again, valid for the whole run (the simulator's tokens last 10 minutes).
            token = livekit.sign(
                request.body,
                SIGNING.livekit_api_key,
                SIGNING.livekit_api_secret,
                int(time.time()),
                token_seconds,
            )
            headers = {**headers, livekit.SIGNATURE_HEADER: token}
        yield headers, request.body


def _native_requests(platform: str, seed: int, sessions: int) -> Iterator[tuple[dict[str, str], bytes]]:
    """The same platform's traffic (another seed: other rooms, participants and ids), each
    request translated here, before anything is timed, into the native body the service would
    make of it: the same events, sessions and connections as the platform's route appends, so
    that the pair differs by the signature and the translation alone."""
    headers = {"Content-Type": "application/json"}
    for _, body in _platform_requests(platform, seed, sessions, token_seconds=0):
        native = _translated(platform, body)
        assert not isinstance(native, Ignored)  # _platform_requests left those out
        yield headers, orjson.dumps(native)


def routes(args: argparse.Namespace) -> list[tuple[Route, Route]]:
    """Each platform's pair of routes, one stream each for the whole run: no event comes twice."""
    # Room for every run, their warm-ups and the generation itself, with a margin.
    token_seconds = int(3600 + 10 * args.repeat * 2 * len(PLATFORMS) * (args.seconds + args.warmup))
    found = []
    for offset, platform in enumerate(PLATFORMS, start=1):
        if platform in args.platforms:
            native = _native_requests(platform, args.seed + 2 * offset, args.sessions)
            signed = _platform_requests(platform, args.seed + 2 * offset + 1, args.sessions, token_seconds)
            found.append(
                (
                    Route(pair_name(platform), "/v1/events", native),
                    Route(platform, f"/v1/callbacks/{platform}", signed),
                )
            )
    return found


def write_pool(route: Route, count: int, host: str, path: Path) -> int:
    """The route's next `count` requests, as replay_requests.lua reads them."""
    wire = (
        http_request("POST", route.path, host, headers, body)
        for headers, body in (next(route.requests) for _ in range(count))
    )
    return write_requests(path, wire)


async def counters(service: Service) -> Figures:
    samples = await service.metrics()
    return {
        "appended": value(samples, "ledger_events_appended_total"),
        "duplicates": value(samples, "ledger_events_duplicate_total"),
        "rejected": sum(v for (name, _), v in samples.items() if name == "ledger_events_rejected_total"),
        "signature_failures": sum(
            v for (name, _), v in samples.items() if name == "ledger_webhook_signature_failures_total"
        ),
    }


async def settled(service: Service, before: Figures, at_least: float, within: float = 120) -> Figures:
    """The service's counters once ingest has appended `at_least` events since `before` and
    nothing more has come for half a second (requests cut off at wrk's end may follow)."""
    deadline = now() + within
    last = await counters(service)
    quiet_since = now()
    while now() < deadline:
        await asyncio.sleep(0.1)
        service.check()
        current = await counters(service)
        if current != last:
            last, quiet_since = current, now()
        elif last["appended"] - before["appended"] >= at_least and now() - quiet_since >= 0.5:
            break
    else:
        got = last["appended"] - before["appended"]
        say(f"  warning: {got:.0f} of {at_least:.0f} appended in {within:.0f} s")
    return {key: last[key] - before[key] for key in last}


async def measure(
    service: Service, nats_pid: int | None, route: Route, args: argparse.Namespace, pool: Path, seconds: float
) -> Figures:
    host = service.http_url.removeprefix("http://")
    count = int(args.requests or args.rate_ceiling * seconds)
    await asyncio.to_thread(write_pool, route, count, host, pool)
    before = await counters(service)
    profiler = None
    if args.profile_dir is not None and service.pid is not None:
        # This route's window alone, the service and its relay child: collapsed stacks.
        output = args.profile_dir / f"{route.name}-{int(time.time())}.txt"
        profiler = await asyncio.create_subprocess_exec(
            *[PY_SPY, "record", "--pid", str(service.pid), "--subprocesses", "--format", "raw"],
            *["--rate", "200", "--duration", f"{max(1, int(seconds))}", "--output", str(output)],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    window = CpuWindow()
    window.start()
    figures = await run_wrk(
        service.http_url,
        seconds,
        args.connections,
        args.threads,
        REPLAY_SCRIPT,
        [str(pool), str(args.threads)],
    )
    cpu = window.stop(service.pid, nats_pid)
    if profiler is not None:
        await profiler.wait()
    figures |= await settled(service, before, figures.get("ok", 0.0))
    await asyncio.to_thread(pool.unlink)
    return figures | {"cpu_service": cpu.get("cpu_service", float("nan"))}


async def amain(args: argparse.Namespace, folder: Path, pg_url: str) -> list[dict[str, Figures]]:
    pairs = routes(args)
    backend = make_backend(args.backend, folder, pg_url, "bench_webhooks")
    runs: list[dict[str, Figures]] = []
    (folder / "nats").mkdir()
    async with NatsServer(folder / "nats") as server, backend.fresh() as url:
        settings = {**SECRETS, "LEDGER_HOOKS": ""} | service_settings(args)
        service = Service(server.url, url, folder, "FULL", None, settings)
        async with running_service(service):
            if args.warmup > 0:
                for pair in pairs:
                    for route in pair:
                        await measure(service, server.pid, route, args, folder / "pool", args.warmup)
                say(f"warmed up: {args.warmup:g} s a route")
            for run in range(args.repeat):
                figures: dict[str, Figures] = {}
                for native, signed in pairs:
                    # A pair: the native events beside the signed webhooks, first in one run,
                    # second in the next.
                    for route in (native, signed) if run % 2 == 0 else (signed, native):
                        figures[route.name] = await measure(
                            service, server.pid, route, args, folder / "pool", args.seconds
                        )
                        shown = ", ".join(f"{k}={v:,.4g}" for k, v in figures[route.name].items())
                        say(f"run {run + 1} {route.name}: {shown}")
                runs.append(figures)
    return runs


def cpu_per_request(figures: Figures) -> float:
    """The service's CPU time a request answered, in µs."""
    return figures["cpu_service"] / 100 * 1e6 / max(figures["rps"], 1e-9)


def pair_name(platform: str) -> str:
    """The name of the /v1/events window paired with `platform`'s."""
    return f"{BASELINE}~{platform}"


def report(runs: list[dict[str, Figures]], args: argparse.Namespace, command: str) -> None:
    medians = {name: median_figures([run[name] for run in runs]) for name in runs[0]}
    ratios = {
        p: statistics.median(run[p]["rps"] / run[pair_name(p)]["rps"] for run in runs) for p in args.platforms
    }
    # The service's CPU a request, beside its pair's: what the signature and the translation
    # cost, less swayed than the rate by whatever else the machine runs.
    costs = {
        p: statistics.median(cpu_per_request(run[p]) / cpu_per_request(run[pair_name(p)]) for run in runs)
        for p in args.platforms
    }
    print(f"\n{command}")
    print(
        f"signed webhooks into one service on {args.backend}, wrk {args.threads} threads x "
        f"{args.connections} connections, {args.seconds:g} s a route, medians of {len(runs)}\n"
    )
    rows = []
    order = [name for p in args.platforms for name in (pair_name(p), p)]
    for name in order:
        m = medians[name]
        baseline = name.startswith(BASELINE)
        platform = name.removeprefix(pair_name(""))
        ratio = 1.0 if baseline else ratios[name]
        cost = 1.0 if baseline else costs[name]
        route = f"/v1/events ({platform}'s, native)" if baseline else f"/v1/callbacks/{name}"
        notes = [f"p99 {verdict(m['p99_ms'], P99_TARGET_MS, higher_is_better=False)}"]
        if not baseline:
            notes.insert(0, f"ratio {verdict(ratio, RATIO_TARGET, higher_is_better=True)}")
            notes.insert(1, f"rate {verdict(m['rps'], RATE_TARGET, higher_is_better=True)}")
        rows.append(
            [
                f"POST {route}",
                f"{m['rps']:,.0f}",
                f"{m['p50_ms']:.1f} / {m['p90_ms']:.1f} / {m['p99_ms']:.1f}",
                f"{ratio:.2f}",
                f"{m['cpu_service']:.0f} %",
                f"{cpu_per_request(m):.0f} µs  {cost:.2f}",
                ", ".join(notes),
            ]
        )
    table(
        ["route", "requests/s", "p50 / p90 / p99 ms", "ratio", "service CPU", "CPU a request", "verdicts"],
        rows,
        (1, 2, 3, 4, 5),
    )
    print(
        f"\ntargets: a platform >= {RATIO_TARGET:.0%} of the rate of its events as native bodies on "
        f"POST /v1/events, >= {RATE_TARGET:,.0f} webhooks/s, p99 < {P99_TARGET_MS:.0f} ms; service CPU "
        "in % of one core, and a request's (with its ratio to its /v1/events pair's)\n"
    )
    rows = []
    loud = []
    for name in order:
        total = {key: sum(run[name].get(key, 0.0) for run in runs) for key in runs[0][name]}
        rows.append(
            [
                name,
                f"{total['sent']:,.0f}",
                f"{total['ok']:,.0f}",
                f"{total['non2xx']:,.0f}",
                f"{total['appended']:,.0f}",
                f"{total['duplicates']:,.0f}",
                f"{total['rejected']:,.0f}",
                f"{total['sent'] - total['pool']:,.0f}" if total["sent"] > total["pool"] else "0",
            ]
        )
        if total["non2xx"] or total["socket_errors"] or total["signature_failures"]:
            loud.append(
                f"{name}: {total['non2xx']:.0f} non-2xx answers, {total['socket_errors']:.0f} socket errors, "
                f"{total['signature_failures']:.0f} signature failures"
            )
        if total["appended"] < total["ok"] or total["duplicates"] or total["rejected"]:
            loud.append(
                f"{name}: {total['ok']:.0f} answered 2xx but {total['appended']:.0f} appended, "
                f"{total['duplicates']:.0f} duplicates, {total['rejected']:.0f} rejected"
            )
        if total["sent"] > total["pool"]:
            loud.append(f"{name}: the pool ran out; raise --requests or --rate-ceiling")
    table(
        ["route", "sent", "2xx", "non-2xx", "appended", "duplicates", "rejected", "repeats"],
        rows,
        (1, 2, 3, 4, 5, 6, 7),
    )
    print("(over all runs; appended: from the service's /metrics, after ingest caught up)")
    for line in loud:
        print(f"!!! {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_arguments(parser, both=False)
    parser.add_argument("--seconds", type=float, default=10, help="wrk's duration, a route")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=2, help="seconds a route, untimed, before the runs")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions (rooms) the events fall into")
    parser.add_argument(
        "--rate-ceiling",
        type=float,
        default=6000,
        help="requests a second no route will reach: a route's pool is this times --seconds",
    )
    parser.add_argument("--requests", type=int, default=0, help="a route's pool, overriding --rate-ceiling")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--platforms",
        default=",".join(PLATFORMS),
        help="which, comma-separated (each beside its events posted natively)",
    )
    add_service_arguments(parser)
    args = parse_service_arguments(parser)
    args.platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    if set(args.platforms) - set(PLATFORMS):
        parser.error(f"--platforms: choose among {', '.join(PLATFORMS)}")
    require_wrk()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    runs = run_in_folder("bench-webhooks-", args, amain)
    report(runs, args, command)


if __name__ == "__main__":
    main()
