"""The service: N events published (js.publish_async, into the CONNECTIONS stream created as the
service creates it) before `connledger serve` starts on a fresh database. The records, read back
over `ledger.replay`, give each batch's start (recordedAt is stamped when a batch's transaction
begins) and first position. Sustained rate: the events appended between the first batch begun
after the service said "ready" and the last batch, over the time between them (before "ready"
its relay child is still starting, on one of the same two cores). Also: the rate from the first
batch (unique events / (last recordedAt - first recordedAt), which counts the last batch's
events but not its time), and the wall time from spawning the process to the head reaching the
number of unique events (polled with `ledger.sessions.x.count` and minPosition); the mean batch
from the service's /metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import nats

from bench.harness.clients import replay, wait_for_head
from bench.harness.clock import now
from bench.harness.cpu import CpuWindow
from bench.harness.databases import Backend
from bench.harness.figures import Figures, say, verdict
from bench.harness.nats_server import NatsServer
from bench.harness.traffic import DEFAULTS, publish_all
from bench.phases import client_ceiling, naive_faststream
from bench.phases.context import Context, Rows, cpu_note
from service.nats.streams import ensure_connections_stream

NAME = "service"


def steady_rate(records: Sequence[dict[str, Any]], since_ms: float) -> float:
    """Records a second from the start of the first batch begun after `since_ms` (wall clock)
    to the start of the last batch: the events appended in between over the time between.

    A batch's records share its recordedAt (stamped when its transaction begins), so no batch
    is counted whose time is not in the span; nan when fewer than two batches begin after."""
    starts: list[tuple[int, int]] = []  # (recordedAt, position of the batch's first record)
    for record in records:
        if not starts or record["recordedAt"] != starts[-1][0]:
            starts.append((record["recordedAt"], record["position"]))
    window = [start for start in starts if start[0] >= since_ms]
    if len(window) < 2:
        return math.nan
    (t0, p0), (t1, p1) = window[0], window[-1]
    return (p1 - p0) / ((t1 - t0) / 1000)


async def run(ctx: Context, backend: Backend) -> Figures:
    """The service reading N events that wait in the stream when it starts."""
    traffic = ctx.traffic
    async with NatsServer(ctx.subfolder("nats")) as server, backend.fresh() as url:
        nc = await nats.connect(server.url)
        try:
            await ensure_connections_stream(nc, DEFAULTS)
            await publish_all(nc, traffic)
            async with ctx.service(server.url, url, NAME, backend.name) as service:
                window = CpuWindow()
                window.start()
                within = max(120.0, len(traffic) / 500)
                reached, head = await wait_for_head(nc, service, traffic.unique, within)
                cpu = window.stop(service.pid, server.pid, url)
                wall_offset = time.time() - now()
                _, final = await wait_for_head(nc, service, traffic.unique, 60)
                records, _ = await replay(nc, {}, within=120)
                batches, messages = await service.ingest_counts(len(traffic))
        finally:
            await nc.close()
    if final != traffic.unique:
        say(f"  warning: head {final}, expected {traffic.unique} unique events")
    span = (records[-1]["recordedAt"] - records[0]["recordedAt"]) / 1000
    # Once the service said "ready": its relay child is up by then, whose start-up (a second
    # of imports on one of the two cores) slows the first batches of a short run.
    steady = steady_rate(records, (service.ready + wall_offset) * 1000)
    if math.isnan(steady):
        say("  warning: fewer than two batches after ready (more --events?); sustained from the first batch")
        steady = traffic.unique / span
    figures = {
        "rate": traffic.unique / span,
        "steady": steady,
        "span": span,
        "wall": reached - service.spawned,
        "wall_ready": reached - service.ready,
        "startup": service.ready - service.spawned,
        "head": head,
        "disconnects": service.disconnects(),
        **cpu,
    }
    if batches:
        figures["mean_batch"] = messages / batches
    return figures


def report(rows: Rows, backend: str, results: dict[str, Figures], ctx: Context) -> None:
    service = results.get(NAME)
    if not service:
        return
    client, naive = results.get(client_ceiling.NAME), results.get(naive_faststream.NAME)
    rows.add(
        backend,
        "service sustained (recordedAt)",
        f"{service['steady']:,.0f} ev/s",
        note=f"batches begun after ready; from the first batch {service['rate']:,.0f} ev/s "
        f"({ctx.traffic.unique:,} unique in {service['span']:.2f} s)"
        + (f", mean batch {service['mean_batch']:.0f}" if "mean_batch" in service else ""),
    )
    rows.add(
        backend,
        "service wall: spawn -> head = N",
        f"{service['wall']:.2f} s",
        note=f"ready after {service['startup']:.2f} s; ready -> head {service['wall_ready']:.2f} s "
        f"= {len(ctx.traffic) / service['wall_ready']:,.0f} msg/s",
    )
    if note := cpu_note(service):
        rows.add(backend, "  during ingest", "", note=note)
    if client:
        ratio = service["steady"] / client["rate"]
        whole = service["rate"] / client["rate"]
        rows.add(
            backend,
            "ratio service / (a)",
            f"{ratio:.2f}",
            ">= 0.70",
            verdict(ratio, 0.70, True) + f"; from the first batch {whole:.2f}",
        )
    if naive:
        ratio = service["steady"] / naive["rate"]
        rows.add(backend, "ratio service / (b)", f"{ratio:.1f}", ">= 10", verdict(ratio, 10, True))
