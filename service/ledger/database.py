"""Engines and migrations for the two supported databases.

SQLite is set up for one writer and many readers: WAL, a busy timeout, and transactions begun
explicitly (the sqlite3 module's own implicit BEGIN is turned off), so that the append path can
take the write lock at its start with BEGIN IMMEDIATE instead of failing to upgrade a read lock
halfway through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.errors import ConfigurationError
from service.ledger.pool_liveness import ping_after_idle
from service.redact import mask_url

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "SCHEMA_REVISION",
    "create_engine",
    "ensure_schema",
    "migrate",
    "migration_connection",
]

# The migrations ship inside the package (`service/migrations`, a link to the repository's
# `migrations/` in a checkout, a folder in the wheel): found beside this code wherever it is
# installed, never through the working directory.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
# The Alembic revision of the schema this code reads and writes: the newest in `migrations/`
# (a test keeps the two equal). Every command checks for it with one query before it would load
# Alembic, whose import alone takes most of a second: the start-up of `connledger count` or
# `replay`, which a script may run thousands of times.
SCHEMA_REVISION: Final = "0007"
SUPPORTED = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
WAL_AUTOCHECKPOINT_PAGES = 10_000


def create_engine(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 5,
    max_overflow: int | None = None,
    pool_timeout: float = 30.0,
) -> AsyncEngine:
    """An engine for `url` with `pool_size` connections kept (and `max_overflow` more under
    load, as many again by default); a checkout waits `pool_timeout` seconds at most."""
    overflow = pool_size if max_overflow is None else max_overflow
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigurationError(
            f"LEDGER_DATABASE_URL: {mask_url(url)!r} is not a database URL; use "
            "sqlite+aiosqlite:///path or postgresql+asyncpg://user:password@host/db (a password "
            "with @, / or : in it percent-encoded)"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise ConfigurationError(
            f"LEDGER_DATABASE_URL: {backend!r} is not supported; use SQLite or PostgreSQL"
        )
    driver = SUPPORTED[backend]
    if parsed.drivername != driver:
        # postgresql:// and sqlite:// mean the async drivers the service runs on.
        parsed = parsed.set(drivername=driver)
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            parsed, pool_size=pool_size, max_overflow=overflow, pool_timeout=pool_timeout
        )
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    # AUTOCOMMIT: SQLAlchemy issues no BEGIN of its own. The append path and the snapshot reads
    # begin their transactions explicitly; every other read is one statement, its own snapshot.
    # Without it, each checkout's liveness check was BEGIN, a ping and ROLLBACK, and each
    # return another ROLLBACK: four round trips around every batch and every query. A pooled
    # connection is checked with a round trip only when it has been idle (pool_liveness.py).
    engine = create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=overflow,
        pool_timeout=pool_timeout,
        isolation_level="AUTOCOMMIT",
    )
    ping_after_idle(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to us (and to SQLAlchemy's "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # SQLite checkpoints the WAL into the database file once the WAL passes this many pages
        # (default 1000, 4 MB). A batch of thousands of events touches thousands of pages
        # scattered over the indexes, so the default checkpoints at nearly every commit, each
        # time writing back (and syncing) pages that the next batch changes again. 10,000
        # pages (40 MB) lets a page be written back once for several batches.
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def migrate(engine: AsyncEngine, revision: str = "head", *, downgrade: bool = False) -> None:
    """Run the Alembic migrations on `engine` (upgrade to, or downgrade to, `revision`)."""

    from alembic import command

    def run(connection: Connection) -> None:
        config = _alembic_config()
        config.attributes["connection"] = connection
        if downgrade:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)

    async with migration_connection(engine) as connection:
        await connection.run_sync(run)
        await connection.commit()


@asynccontextmanager
async def migration_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for Alembic: each migration in a transaction of its own (PostgreSQL's DDL
    is transactional), not in the engine's autocommit."""
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection = await connection.execution_options(isolation_level="READ COMMITTED")
        yield connection


async def ensure_schema(engine: AsyncEngine) -> None:
    """Bring the database to SCHEMA_REVISION, loading Alembic only when it is not there."""
    if await _recorded_revision(engine) != SCHEMA_REVISION:
        await migrate(engine)


async def _recorded_revision(engine: AsyncEngine) -> str | None:
    """The revision in Alembic's version table, read without Alembic; None when there is no
    such table (a new database) or it holds no row."""
    exists = (
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        if engine.dialect.name == "sqlite"
        else "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'alembic_version' "
        "AND schemaname = ANY (current_schemas(false))"
    )
    async with engine.connect() as connection:
        if not await connection.scalar(text(exists)):
            return None
        rows = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    # Alembic keeps one row per head; a branched history has several and is left to Alembic.
    return rows[0][0] if len(rows) == 1 else None


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)
