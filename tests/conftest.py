"""Shared fixtures. Databases: SQLite in a temporary folder, and PostgreSQL from
LEDGER_TEST_POSTGRES_URL when set, else an embedded server started once per run. Each test gets
a fresh PostgreSQL database, copied from a template that was migrated once."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.harness.databases import admin, embedded_postgres, sqlalchemy_url
from service.app.bootstrap import open_ledger
from service.ledger.database import create_engine, migrate
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings, load_settings

BACKENDS = ["sqlite", "postgresql"]
# A template of this run's own: runs side by side on one server (of different schemas, too)
# never drop or copy each other's.
TEMPLATE = f"ledger_test_template_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """An admin URL of a PostgreSQL server for the whole run."""
    given = os.environ.get("LEDGER_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    with embedded_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> Iterator[str]:
    """A database migrated to head, copied for each test (much faster than migrating each)."""

    async def build() -> None:
        await admin(postgres_url, f"CREATE DATABASE {TEMPLATE}")
        engine = create_engine(sqlalchemy_url(postgres_url, TEMPLATE))
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    # In a thread of its own: this may be first asked for from inside a running event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, build()).result()
    yield TEMPLATE
    with ThreadPoolExecutor(1) as pool:
        pool.submit(
            asyncio.run, admin(postgres_url, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        ).result()


@pytest.fixture
async def fresh_postgres(postgres_url: str) -> AsyncIterator[str]:
    """An empty, unmigrated PostgreSQL database."""
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    await admin(postgres_url, f"CREATE DATABASE {name}")
    try:
        yield sqlalchemy_url(postgres_url, name)
    finally:
        await admin(postgres_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated ledger database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    template: str = request.getfixturevalue("postgres_template")
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    await admin(server, f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield sqlalchemy_url(server, name)
    finally:
        await admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(database_url=database_url, var_dir=tmp_path / "var", hooks="")


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[LedgerService]:
    async with open_ledger(settings) as opened:
        yield opened
