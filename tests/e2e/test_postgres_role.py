"""The least-privilege role of deploy/postgres-roles.sql runs the service and cannot change the
ledger."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.bootstrap import open_ledger
from service.errors import ConfigurationError
from service.ledger.database import create_engine, current_revision, migrate
from service.settings import Settings, load_settings
from tests.helpers import created, destroyed

ROLES = Path(__file__).resolve().parents[2] / "deploy" / "postgres-roles.sql"


async def _as_service_role(database_url: str, *grants: str, revision: str = "head") -> Settings:
    """Migrate as the owner (to `revision`), apply the roles file and `grants`, and return the
    settings of a ledger that connects as ledger_service."""
    owner = create_engine(database_url)
    try:
        await migrate(owner, revision)
    finally:
        await owner.dispose()
    dsn = make_url(database_url).set(drivername="postgresql")
    admin = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        await admin.execute(ROLES.read_text())
        for grant in grants:
            await admin.execute(grant)
    finally:
        await admin.close()
    as_service = make_url(database_url).set(username="ledger_service", password=None)
    return load_settings(database_url=as_service.render_as_string(hide_password=False), hooks="")


async def test_the_service_role_appends_and_reads_but_cannot_change_the_ledger(fresh_postgres: str) -> None:
    settings = await _as_service_role(fresh_postgres)
    async with open_ledger(settings) as ledger:  # finds the schema at head, migrates nothing
        result = await ledger.pipeline.process(
            [created("e1"), created("e2", connection="c2"), destroyed("e3")]
        )
        assert result.tally()["appended"] == 3
        assert (await ledger.queries.count("s1"))["count"] == 1
        with pytest.raises(Exception, match="permission denied"):
            await ledger.store.rebuild()  # it is the owner's to run
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


async def test_the_service_role_on_an_older_schema_is_told_to_migrate_as_the_owner(
    fresh_postgres: str,
) -> None:
    settings = await _as_service_role(fresh_postgres, revision="0001")
    with pytest.raises(
        ConfigurationError, match=r"LEDGER_DATABASE_URL: .* may not migrate .*connledger migrate"
    ):
        async with open_ledger(settings):
            pass
    # Nothing was changed by the attempt: the owner can still migrate, and then the role starts.
    owner = create_engine(fresh_postgres)
    try:
        assert await current_revision(owner) == "0001"
        await migrate(owner)
    finally:
        await owner.dispose()
    async with open_ledger(settings) as ledger:
        assert (await ledger.pipeline.process([created("e1")])).tally()["appended"] == 1


async def test_a_role_that_may_truncate_but_does_not_own_the_projection_rebuilds_it(
    fresh_postgres: str,
) -> None:
    """The owner's rebuild drops the projection's primary key and builds it again; a role that
    may not (granted TRUNCATE, say, for maintenance) keeps the key and gets the same result."""
    settings = await _as_service_role(
        fresh_postgres, "GRANT TRUNCATE ON projection_connections, projection_sessions TO ledger_service"
    )
    async with open_ledger(settings) as ledger:
        await ledger.pipeline.process([created("e1"), created("e2", connection="c2"), destroyed("e3")])
        async with ledger.store.engine.connect() as connection:
            before = (await connection.execute(text(PROJECTION))).all()
        assert await ledger.store.rebuild() == 3
        async with ledger.store.engine.connect() as connection:
            assert (await connection.execute(text(PROJECTION))).all() == before
            key = (await connection.execute(text(PRIMARY_KEY))).all()
        assert key == [("projection_connections_pkey", "PRIMARY KEY (session_id, connection_id)")]
        await ledger.pipeline.process([destroyed("e4", connection="c2")])
        assert (await ledger.queries.count("s1"))["count"] == 0


PROJECTION = "SELECT * FROM projection_connections ORDER BY session_id, connection_id"
PRIMARY_KEY = (
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid = 'projection_connections'::regclass AND contype = 'p'"
)
