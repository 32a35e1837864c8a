"""(a) the client's ceiling: the N events in the CONNECTIONS stream, read by a plain nats-py
durable pull consumer, `fetch(500)` and ack each message. Messages/s. (No database: the same
figure for both backends, measured again next to each so that the ratio compares neighbours.)"""

from __future__ import annotations

import asyncio

import nats
from nats.js.api import AckPolicy as ConsumerAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

from bench.harness.clock import now
from bench.harness.databases import Backend
from bench.harness.figures import Figures, say
from bench.harness.nats_server import NatsServer
from bench.harness.traffic import DEFAULTS, publish_all
from bench.phases.context import Context, Rows
from service.nats.streams import ensure_connections_stream

NAME = "client"


async def run(ctx: Context, backend: Backend) -> Figures:
    """(a) nats-py durable pull consumer, fetch(500) + ack each, over the N stored events."""
    traffic = ctx.traffic
    async with NatsServer(ctx.subfolder("nats-a")) as server:
        nc = await nats.connect(server.url)
        try:
            await ensure_connections_stream(nc, DEFAULTS)
            await publish_all(nc, traffic)
            js = nc.jetstream()
            durable = "bench-client-ceiling"
            # The consumer configuration of service/nats/ingest.py.
            subscription = await js.pull_subscribe(
                f"{DEFAULTS.subject_prefix}.>",
                durable=durable,
                stream=DEFAULTS.connections_stream,
                config=ConsumerConfig(
                    ack_policy=ConsumerAckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=60,
                    max_deliver=-1,
                    max_ack_pending=20_000,
                ),
            )
            received = 0
            started = now()
            while received < len(traffic):
                messages = await subscription.fetch(500, timeout=10)
                for message in messages:
                    await message.ack()
                received += len(messages)
            await nc.flush()
            seconds = now() - started
            # The server applies acks asynchronously: all of them should land within moments.
            deadline = now() + 5
            while (info := await js.consumer_info(DEFAULTS.connections_stream, durable)).num_ack_pending:
                if now() > deadline:
                    say(f"  warning: {info.num_ack_pending} acks still pending 5 s after the last fetch")
                    break
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
    return {"rate": received / seconds, "seconds": seconds, "messages": received}


def report(rows: Rows, backend: str, results: dict[str, Figures], ctx: Context) -> None:
    if client := results.get(NAME):
        rows.add(backend, "(a) nats-py fetch(500)+ack", f"{client['rate']:,.0f} msg/s")
