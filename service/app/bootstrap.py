"""The composition root: builds every object of the service from the settings. Nothing else
constructs engines, stores or hooks, and nothing is built at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from service.driver_internals import check_versions
from service.hooks.loader import load_hooks
from service.hooks.runner import HookRunner
from service.ledger.database import create_engine, ensure_schema
from service.ledger.postgres import PostgresStore
from service.ledger.sqlite import SqliteStore
from service.ledger.store import LedgerStore, database_setting_errors, transient_errors
from service.metrics import Metrics
from service.pipeline.batches import Pipeline
from service.pipeline.dashboard import DashboardQueries
from service.pipeline.ledger_service import LedgerService
from service.pipeline.live_counts import LiveCounts
from service.pipeline.queries import ProjectionQueries
from service.settings import Settings
from service.streaming_readers import StreamingReaders

__all__ = ["follow_counts", "open_ledger"]

# Connections of the readers' pool (and as many again under load). Each streaming reader holds
# one only while it reads a page, so a few serve every reader in turn; a reader that waits for
# one longer than the pool's timeout ends with a transient error, never an append.
READER_POOL_SIZE = 3


@asynccontextmanager
async def open_ledger(
    settings: Settings, *, run_migrations: bool = True, with_hooks: bool = True
) -> AsyncIterator[LedgerService]:
    # Before anything runs on them: the private attributes reached in driver_internals.py.
    check_versions()
    url = settings.resolved_database_url
    engine = create_engine(url, sqlite_synchronous=settings.sqlite_synchronous)
    # Streamed history has a pool of its own (see LedgerStore): appends never wait behind it.
    readers = create_engine(url, sqlite_synchronous=settings.sqlite_synchronous, pool_size=READER_POOL_SIZE)
    try:
        if run_migrations:
            with database_setting_errors(), transient_errors():
                await ensure_schema(engine)
        store: LedgerStore = (
            SqliteStore(engine, readers)
            if engine.dialect.name == "sqlite"
            else PostgresStore(engine, readers)
        )
        hooks = HookRunner(
            load_hooks(settings.hook_names, settings) if with_hooks else [],
            timeout=settings.hook_timeout,
            fail_closed=settings.hooks_fail_closed,
        )
        metrics = Metrics()
        pipeline = Pipeline(store, hooks, settings.subject_prefix, metrics, settings.hook_claim_timeout)
        streaming = StreamingReaders(settings.max_streaming_readers, metrics)
        # The dashboard's reads span a time window: on the readers' pool, away from appends.
        dashboard = DashboardQueries(readers)
        queries = ProjectionQueries(engine)
        yield LedgerService(settings, store, queries, pipeline, metrics, streaming, dashboard)
    finally:
        await readers.dispose()
        await engine.dispose()


@asynccontextmanager
async def follow_counts(ledger: LedgerService) -> AsyncIterator[LiveCounts]:
    """The in-memory counts of a serving process: told of every commit of this process's
    pipeline, and following the ledger for every other writer's, until the block ends."""
    counts = LiveCounts(ledger.store.engine, poll_interval=ledger.settings.follow_interval)
    ledger.pipeline.listeners.append(counts.on_commit)
    follower = asyncio.create_task(counts.run(), name="counts")
    try:
        yield counts
    finally:
        ledger.pipeline.listeners.remove(counts.on_commit)
        counts.stop()
        follower.cancel()
        with suppress(asyncio.CancelledError):
            await follower
