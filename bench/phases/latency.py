"""Publish-to-queryable latency at --latency-rate events/s for --latency-seconds (a fresh
service and database): a paced publisher in a child process stamps each event; a core NATS
subscription on `ledger.records.>` stamps its record (the relay publishes after commit, so this
upper-bounds "queryable"); count requests with minPosition sample it as well. The record's
recordedAt splits each delay into before the append began (waiting in the stream, fetch,
decode, hooks) and after (append, commit, ack, relay). The mean batch from /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
import orjson
from nats.aio.msg import Msg

from bench.harness.clients import REQUEST_ERRORS, ask
from bench.harness.clock import now
from bench.harness.cpu import CpuWindow
from bench.harness.databases import Backend
from bench.harness.figures import Figures, spread_ms, verdict
from bench.harness.nats_server import NatsServer
from bench.harness.traffic import publish_paced, publish_rate
from bench.phases.context import Context, Rows, cpu_note

NAME = "latency"


async def run(ctx: Context, backend: Backend) -> Figures:
    """Paced publishing; when each event's record shows up on ledger.records.>."""
    args, traffic = ctx.args, ctx.paced
    async with (
        NatsServer(ctx.subfolder("nats")) as server,
        backend.fresh() as url,
        ctx.service(server.url, url, NAME, backend.name) as service,
    ):
        listener = await nats.connect(server.url)
        asker = await nats.connect(server.url)
        received: dict[str, float] = {}
        recorded: dict[str, float] = {}  # the record's recordedAt, on perf_counter's clock
        # recordedAt is wall-clock milliseconds, taken when the batch's write transaction begins.
        wall_offset = time.time() - now()
        all_received = asyncio.Event()
        samples: list[tuple[int, float, bool]] = []  # (event index, answered at, reached?)

        async def on_record(message: Msg) -> None:
            stamp = now()
            event_id = message.headers.get("Nats-Msg-Id") if message.headers else None
            if event_id is not None and event_id not in received:
                received[event_id] = stamp
                recorded[event_id] = orjson.loads(message.data)["recordedAt"] / 1000 - wall_offset
                if len(received) >= traffic.unique:
                    all_received.set()

        async def sample(start_at: float) -> None:
            # Every 100 ms: the newest event due by now, asked for with its own position.
            tick = start_at + 0.05
            while True:
                await asyncio.sleep(max(0.0, tick - now()))
                tick += 0.1
                index = min(len(traffic) - 1, int((now() - start_at) * args.latency_rate))
                while index > 0 and not traffic.positions[index]:
                    index -= 1
                position = traffic.positions[index]
                subject = f"ledger.sessions.{traffic.sessions[index]}.count"
                try:
                    answer = await ask(asker, subject, {"minPosition": position})
                    samples.append((index, now(), answer["position"] >= position))
                except REQUEST_ERRORS:
                    samples.append((index, now(), False))
                if index >= len(traffic) - 1:
                    return

        sampler: asyncio.Task[None] | None = None
        try:
            await listener.subscribe("ledger.records.>", cb=on_record, pending_msgs_limit=1_000_000)
            await listener.flush()
            start_at = now() + 0.5
            publishing = publish_paced(ctx.pool, server.url, traffic, args.latency_rate, start_at)
            sampler = asyncio.create_task(sample(start_at))
            window = CpuWindow()
            window.start()
            stamps = await asyncio.wait_for(publishing, len(traffic) / args.latency_rate + 60)
            cpu = window.stop(service.pid, server.pid, url)
            await asyncio.wait_for(sampler, 30)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_received.wait(), 30)
            batches, messages = await service.ingest_counts(len(traffic))
        finally:
            if sampler is not None:
                sampler.cancel()
            await listener.close()
            await asker.close()

    delays = [
        received[event_id] - stamps[i]
        for i, event_id in enumerate(traffic.ids)
        if traffic.positions[i] and event_id in received
    ]
    to_append = [
        recorded[event_id] - stamps[i]
        for i, event_id in enumerate(traffic.ids)
        if traffic.positions[i] and event_id in recorded
    ]
    after_append = [received[event_id] - recorded[event_id] for event_id in recorded]
    asked = [answered - stamps[index] for index, answered, reached in samples if reached]
    return {
        "mean_batch": messages / batches if batches else float("nan"),
        **spread_ms(delays),
        "missing": traffic.unique - len(delays),
        **spread_ms(to_append, "to_append_", (50, 99), top=False),
        **spread_ms(after_append, "after_append_", (50, 99), top=False),
        "publish_rate": publish_rate(stamps),
        **spread_ms(asked, "ask_", (50, 99)),
        "ask_n": len(asked),
        "ask_short": len(samples) - len(asked),
        "disconnects": service.disconnects(),
        **cpu,
    }


def report(rows: Rows, backend: str, results: dict[str, Figures], ctx: Context) -> None:
    latency = results.get(NAME)
    if not latency:
        return
    rows.add(
        backend,
        f"publish -> ledger.records, {ctx.args.latency_rate:,.0f}/s",
        f"p50 {latency['p50']:.1f} / p90 {latency['p90']:.1f} / p99 {latency['p99']:.1f} / "
        f"max {latency['max']:.1f} ms",
        "p99 < 100 ms",
        verdict(latency["p99"], 100, False)
        + (f"; {latency['missing']:.0f} records missing" if latency["missing"] else ""),
    )
    rows.add(
        backend,
        "  count with minPosition (sampled)",
        f"p50 {latency['ask_p50']:.1f} / p99 {latency['ask_p99']:.1f} / max {latency['ask_max']:.1f} ms",
        note=f"{latency['ask_n']:.0f} samples, publisher at {latency['publish_rate']:,.0f}/s, "
        f"mean ingest batch {latency['mean_batch']:.0f}"
        + (f", {latency['ask_short']:.0f} answered short" if latency["ask_short"] else ""),
    )
    rows.add(
        backend,
        "  split at recordedAt (append start)",
        f"before p50 {latency['to_append_p50']:.1f} / p99 {latency['to_append_p99']:.1f} ms; "
        f"after p50 {latency['after_append_p50']:.1f} / p99 {latency['after_append_p99']:.1f} ms",
        note="before: waiting in the stream, fetch, decode; after: append, commit, ack, relay",
    )
    if note := cpu_note(latency):
        rows.add(backend, "  while publishing", "", note=note)
