"""(b) a naive FastStream 0.7 subscriber: pull consumer with a batch of one, and per message one
SQLAlchemy async transaction inserting one row into a plain table, on the same backend with the
service's engine settings. Capped at --naive-cap messages or --naive-seconds."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats

from bench.harness.clock import now
from bench.harness.databases import Backend
from bench.harness.figures import Figures, say
from bench.harness.nats_server import NatsServer
from bench.harness.traffic import DEFAULTS, publish_all
from bench.phases.context import Context, Rows
from service.ledger.database import create_engine
from service.nats.streams import ensure_connections_stream

NAME = "naive"


async def run(ctx: Context, backend: Backend) -> Figures:
    """(b) FastStream pull consumer, batch of one, one SQLAlchemy transaction per event."""
    from faststream import AckPolicy
    from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
    from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text, func, select

    count = min(len(ctx.traffic), ctx.args.naive_cap)
    async with NatsServer(ctx.subfolder("nats-b")) as server, backend.fresh() as url:
        nc = await nats.connect(server.url)
        try:
            await ensure_connections_stream(nc, DEFAULTS)
            await publish_all(nc, ctx.traffic, count)
        finally:
            await nc.close()

        # The service's engine settings (SQLite: WAL, the same synchronous pragma).
        engine = create_engine(url, sqlite_synchronous=ctx.args.synchronous)
        metadata = MetaData()
        table = Table(
            "naive_events",
            metadata,
            Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
            Column("event_id", Text),
            Column("subject", Text),
            Column("body", Text),
        )
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

        broker = NatsBroker(server.url, logger=None)
        handled = 0
        finished = asyncio.Event()

        @broker.subscriber(
            f"{DEFAULTS.subject_prefix}.>",
            stream=JStream(DEFAULTS.connections_stream, declare=False),
            durable="bench-naive",
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            ack_policy=AckPolicy.NACK_ON_ERROR,  # the handler's policy: ack after it returned
        )
        async def handle(body: dict[str, Any], message: NatsMessage) -> None:
            nonlocal handled
            async with engine.begin() as connection:
                await connection.execute(
                    table.insert().values(
                        event_id=body.get("id"),
                        subject=message.raw_message.subject,
                        body=message.body.decode(),
                    )
                )
            handled += 1
            if handled >= count:
                finished.set()

        try:
            await broker.start()
            started = now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), ctx.args.naive_seconds)
            done, seconds = handled, now() - started
        finally:
            await broker.stop()
            async with engine.connect() as connection:
                rows = (await connection.execute(select(func.count()).select_from(table))).scalar_one()
            await engine.dispose()
        if rows < done:
            say(f"  warning: {done} handled but {rows} rows in the table")
    return {"rate": done / seconds, "seconds": seconds, "messages": done}


def report(rows: Rows, backend: str, results: dict[str, Figures], ctx: Context) -> None:
    if naive := results.get(NAME):
        rows.add(
            backend,
            "(b) FastStream batch of 1, 1 txn/event",
            f"{naive['rate']:,.0f} msg/s",
            note=f"{naive['messages']:,.0f} msgs in {naive['seconds']:.1f} s",
        )
