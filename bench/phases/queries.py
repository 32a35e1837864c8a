"""The count query under ingest: --query-rate requests/s of `ledger.sessions.<id>.count` for
--query-seconds (paced, concurrent), while a child process publishes --latency-rate events/s.
Baseline (c), in the other seconds of the same window and at the same rate: a bare nats-py
responder in a process of its own answering a constant, the floor that the client, nats-server
and the machine set for any responder. For reference, first 200 requests one at a time and 3 s
of the same paced load, both idle."""

from __future__ import annotations

import asyncio
import contextlib

import nats

from bench.harness.clients import REQUEST_ERRORS, Burst, floor_responder, request_burst, wait_for_head
from bench.harness.clock import now
from bench.harness.cpu import CpuWindow
from bench.harness.databases import Backend
from bench.harness.figures import Figures, percentile, spread_ms, verdict
from bench.harness.nats_server import NatsServer
from bench.harness.traffic import publish_paced, publish_rate
from bench.phases.context import Context, Rows, cpu_note

NAME = "queries"


async def run(ctx: Context, backend: Backend) -> Figures:
    """Count requests at a steady rate while a child process publishes events, in alternate
    seconds with the same requests to a bare responder (baseline (c)); before that, the same
    requests with no ingest, and one at a time, for reference."""
    args, traffic = ctx.args, ctx.loaded
    async with (
        NatsServer(ctx.subfolder("nats")) as server,
        backend.fresh() as url,
        ctx.service(server.url, url, NAME, backend.name) as service,
        floor_responder(server.url) as floor_pid,
    ):
        nc = await nats.connect(server.url)
        try:
            names = sorted(set(traffic.sessions))
            # One request at a time, nothing else going on: the floor of the figures below.
            single: list[float] = []
            for i in range(200):
                sent = now()
                with contextlib.suppress(*REQUEST_ERRORS):
                    await nc.request(f"ledger.sessions.{names[i % len(names)]}.count", b"", timeout=2)
                    single.append(now() - sent)
            # The same paced load with no ingest, for a few seconds.
            idle = await request_burst(nc, names, args.query_rate, 3.0, now() + 0.1)
            # Whatever the service has queued is answered before this (one subscription).
            await wait_for_head(nc, service, 0, 120)

            start_at = now() + 0.5
            publishing = publish_paced(ctx.pool, server.url, traffic, args.latency_rate, start_at)
            # Requests start one second into the ingest and end before it does.
            window = CpuWindow()
            window.start()
            floor = Burst([], 0, [], 0.0)
            loaded = await request_burst(
                nc, names, args.query_rate, args.query_seconds, start_at + 1.0, floor
            )
            cpu = window.stop(service.pid, server.pid, url, [floor_pid])
            stamps = await asyncio.wait_for(publishing, len(traffic) / args.latency_rate + 60)
            _, head = await wait_for_head(nc, service, traffic.unique, 120)
        finally:
            await nc.close()
    return {
        **spread_ms(loaded.latencies),
        "rate": loaded.rate,
        "failures": loaded.failures,
        "lag_p99": percentile(loaded.lags, 99) * 1000,
        **spread_ms(floor.latencies, "floor_", top=False),
        "floor_rate": floor.rate,
        "floor_failures": floor.failures,
        **spread_ms(idle.latencies, "idle_", (50, 99), top=False),
        "idle_rate": idle.rate,
        "idle_failures": idle.failures,
        **spread_ms(single, "single_", (50, 99), top=False),
        "publish_rate": publish_rate(stamps),
        "head_ok": float(head == traffic.unique),
        "disconnects": service.disconnects(),
        **cpu,
    }


def report(rows: Rows, backend: str, results: dict[str, Figures], ctx: Context) -> None:
    queries = results.get(NAME)
    if not queries:
        return
    rows.add(
        backend,
        f"count query, {ctx.args.query_rate:,.0f}/s under ingest",
        f"p50 {queries['p50']:.2f} / p90 {queries['p90']:.2f} / p99 {queries['p99']:.2f} / "
        f"max {queries['max']:.1f} ms",
        "p99 < 5 ms",
        verdict(queries["p99"], 5, False),
    )
    rows.add(
        backend,
        "  achieved request rate",
        f"{queries['rate']:,.0f} req/s",
        note=f"{queries['failures']:.0f} timed out (2 s); client send lag p99 "
        f"{queries['lag_p99']:.1f} ms; publisher {queries['publish_rate']:,.0f} ev/s",
    )
    excess = queries["p99"] - queries["floor_p99"]
    times = queries["p99"] / queries["floor_p99"]
    rows.add(
        backend,
        "  (c) bare nats-py responder, same load",
        f"p50 {queries['floor_p50']:.2f} / p90 {queries['floor_p90']:.2f} / "
        f"p99 {queries['floor_p99']:.2f} ms",
        "",
        f"service - (c) at p99 {excess:+.2f} ms, service / (c) {times:.2f}; "
        f"{queries['floor_rate']:,.0f} req/s answered, {queries['floor_failures']:.0f} timed out",
    )
    if note := cpu_note(queries):
        rows.add(backend, "  during the requests", "", note=note)
    rows.add(
        backend,
        f"  same {ctx.args.query_rate:,.0f}/s, no ingest (3 s)",
        f"p50 {queries['idle_p50']:.2f} / p99 {queries['idle_p99']:.2f} ms",
        note=f"{queries['idle_rate']:,.0f} req/s answered, {queries['idle_failures']:.0f} timed out",
    )
    rows.add(
        backend,
        "  one request at a time, no ingest",
        f"p50 {queries['single_p50']:.2f} / p99 {queries['single_p99']:.2f} ms",
    )
