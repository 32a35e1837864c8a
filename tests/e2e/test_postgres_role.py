"""The least-privilege role of deploy/postgres-roles.sql runs the service and cannot change the
ledger."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.bootstrap import open_ledger
from service.ledger.database import create_engine, migrate
from service.settings import load_settings
from tests.helpers import created, destroyed

ROLES = Path(__file__).resolve().parents[2] / "deploy" / "postgres-roles.sql"


async def test_the_service_role_appends_and_reads_but_cannot_change_the_ledger(fresh_postgres: str) -> None:
    owner = create_engine(fresh_postgres)
    try:
        await migrate(owner)
    finally:
        await owner.dispose()
    dsn = make_url(fresh_postgres).set(drivername="postgresql")
    admin = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        await admin.execute(ROLES.read_text())
    finally:
        await admin.close()

    as_service = make_url(fresh_postgres).set(username="ledger_service", password=None)
    settings = load_settings(database_url=as_service.render_as_string(hide_password=False), hooks="")
    async with open_ledger(settings) as ledger:  # finds the schema at head, migrates nothing
        result = await ledger.pipeline.process(
            [created("e1"), created("e2", connection="c2"), destroyed("e3")]
        )
        assert result.tally()["appended"] == 3
        assert (await ledger.queries.count("s1"))["count"] == 1
        for statement in (
            "UPDATE connection_ledger SET data = 'x'",
            "DELETE FROM connection_ledger",
            "TRUNCATE connection_ledger",
            "TRUNCATE projection_connections",
            "DROP TABLE rejected_messages",
        ):
            with pytest.raises(Exception, match=r"permission denied|must be owner"):
                async with ledger.store.engine.begin() as connection:
                    await connection.execute(text(statement))
        assert (await ledger.queries.count("s1"))["count"] == 1
