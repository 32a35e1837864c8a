"""The migrations (CONTRACT 8: the service migrates the database at start; 9: the triggers that
make the ledger immutable are created by the migrations), on both backends: an empty database
goes up to head, down to base (nothing left), and up again, and the schema the migrations build
is the one service.ledger.schema describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.database import (
    MIGRATIONS_DIR,
    SCHEMA_REVISION,
    create_engine,
    current_revision,
    ensure_schema,
    migrate,
)
from service.ledger.schema import metadata

INSERT_ONE = (
    "INSERT INTO connection_ledger (position, sequence, event_id, session_id, type, event_time, "
    "recorded_at, connection_id, creation_time, data, reason, default_prevented, prevented_by, "
    "hook_failures, source_format, project_id, count_after) VALUES (1, 1, 'e1', 's1', "
    "'connectionCreated', 1, 2, 'c1', 1, NULL, NULL, false, NULL, NULL, 'native', NULL, 1)"
)
TABLES = {
    "connection_ledger",
    "ledger_sessions",
    "projection_connections",
    "projection_sessions",
    "hook_claims",
    "projection_checkpoints",
    "rejected_messages",
}


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _scalars(engine: AsyncEngine, sql: str) -> set[Any]:
    async with engine.connect() as connection:
        return set((await connection.execute(text(sql))).scalars().all())


async def _triggers(engine: AsyncEngine) -> set[str]:
    if engine.dialect.name == "sqlite":
        return await _scalars(engine, "SELECT name FROM sqlite_master WHERE type = 'trigger'")
    return await _scalars(engine, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")


async def _functions(engine: AsyncEngine) -> set[str]:
    if engine.dialect.name == "sqlite":
        return set()
    return await _scalars(
        engine,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public'",
    )


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def _schema_differences(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as connection:
        return await connection.run_sync(_differences)


async def _assert_at_head(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == SCHEMA_REVISION
    assert await _tables(engine) == TABLES | {"alembic_version"}
    expected_triggers = (
        {"connection_ledger_no_update", "connection_ledger_no_delete"}
        if engine.dialect.name == "sqlite"
        else {"connection_ledger_no_update_delete", "connection_ledger_no_truncate"}
    )
    assert await _triggers(engine) == expected_triggers
    assert await _schema_differences(engine) == []
    # The ledger starts empty, and the triggers work. (SQLite has row-level triggers only, so
    # there must be a row for them to refuse a change to.)
    assert await _scalars(engine, "SELECT count(*) FROM connection_ledger") == {0}
    async with engine.begin() as connection:
        await connection.execute(text(INSERT_ONE))
    for statement in ("UPDATE connection_ledger SET data = 'x'", "DELETE FROM connection_ledger"):
        with pytest.raises(Exception, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(text(statement))
    assert await _scalars(engine, "SELECT count(*) FROM connection_ledger") == {1}


async def _up_down_up(engine: AsyncEngine) -> None:
    assert await _tables(engine) == set()
    assert await current_revision(engine) is None

    await migrate(engine)
    await _assert_at_head(engine)
    # Migrating a database already at head changes nothing (the row inserted above stays).
    await migrate(engine)
    assert await current_revision(engine) == SCHEMA_REVISION
    assert await _scalars(engine, "SELECT count(*) FROM connection_ledger") == {1}

    await migrate(engine, "base", downgrade=True)
    # Alembic keeps its (now empty) version table; every table of the ledger is gone, with
    # the triggers and PostgreSQL's trigger function.
    assert await _tables(engine) <= {"alembic_version"}
    assert await current_revision(engine) is None
    assert await _triggers(engine) == set()
    assert "connection_ledger_refuse_change" not in await _functions(engine)

    await migrate(engine)
    await _assert_at_head(engine)

    # What every command does at start: nothing at head, a full upgrade after a downgrade.
    await ensure_schema(engine)
    assert await _scalars(engine, "SELECT count(*) FROM connection_ledger") == {1}
    await migrate(engine, "base", downgrade=True)
    await ensure_schema(engine)
    assert await current_revision(engine) == SCHEMA_REVISION
    assert await _scalars(engine, "SELECT count(*) FROM connection_ledger") == {0}


def test_schema_revision_is_the_newest_migration() -> None:
    """The revision the service checks for at start, before it would load Alembic, is the head
    of `migrations/`: a new migration must move SCHEMA_REVISION with it."""
    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_heads() == [SCHEMA_REVISION]


async def test_upgrade_downgrade_upgrade_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        await _up_down_up(engine)
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade_on_postgresql(fresh_postgres: str) -> None:
    engine = create_engine(fresh_postgres)
    try:
        await _up_down_up(engine)
    finally:
        await engine.dispose()


ID_COLUMNS = {
    ("connection_ledger", "event_id"),
    ("connection_ledger", "session_id"),
    ("connection_ledger", "connection_id"),
    ("ledger_sessions", "session_id"),
    ("projection_connections", "session_id"),
    ("projection_connections", "connection_id"),
    ("projection_sessions", "session_id"),
    ("hook_claims", "event_id"),
}


async def _upgrade_from_0001_keeps_the_rows_and_orders_ids_as_bytes(engine: AsyncEngine) -> None:
    await migrate(engine, "0001")
    async with engine.begin() as connection:
        await connection.execute(text(INSERT_ONE))
        await connection.execute(
            text("INSERT INTO projection_sessions (session_id, count) VALUES ('a', 1), ('B', 2)")
        )
    await migrate(engine)
    await _assert_at_head_with_rows(engine)
    async with engine.connect() as connection:
        order = (
            await connection.execute(text("SELECT session_id FROM projection_sessions ORDER BY session_id"))
        ).all()
    # Byte order: upper case before lower case, whatever the database's locale says.
    assert [row[0] for row in order] == ["B", "a"]
    if engine.dialect.name == "postgresql":
        rows = await _scalars(
            engine,
            "SELECT table_name || '.' || column_name || '=' || coalesce(collation_name, '') "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name IN ('event_id', 'session_id', 'connection_id')",
        )
        assert rows == {f"{table}.{column}=C" for table, column in ID_COLUMNS}


async def _assert_at_head_with_rows(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == SCHEMA_REVISION
    assert await _schema_differences(engine) == []
    assert await _scalars(engine, "SELECT event_id FROM connection_ledger") == {"e1"}
    with pytest.raises(Exception, match="append-only"):
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM connection_ledger"))


async def test_upgrade_from_0001_with_rows_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await _upgrade_from_0001_keeps_the_rows_and_orders_ids_as_bytes(engine)
    finally:
        await engine.dispose()


async def test_upgrade_from_0001_with_rows_on_postgresql(fresh_postgres: str) -> None:
    engine = create_engine(fresh_postgres)
    try:
        await _upgrade_from_0001_keeps_the_rows_and_orders_ids_as_bytes(engine)
    finally:
        await engine.dispose()


REJECTED_ONE = (
    "INSERT INTO rejected_messages (received_at, source, subject, headers, raw, code, message, field) "
    "VALUES (1, 'nats', 'connections.s.connectionCreated', NULL, :raw, 'malformed_json', 'bad', NULL)"
)


async def _upgrade_from_0002_keeps_rejections_and_stores_a_message_once(engine: AsyncEngine) -> None:
    """0003: rejections stored before it stay, without a message key; a key is unique after it,
    and rows without one (HTTP, import) never collide."""
    await migrate(engine, "0002")
    async with engine.begin() as connection:
        await connection.execute(text(REJECTED_ONE), {"raw": b"{old"})
    await migrate(engine)
    assert await current_revision(engine) == SCHEMA_REVISION
    assert await _schema_differences(engine) == []
    assert await _scalars(engine, "SELECT count(*) FROM rejected_messages WHERE message_key IS NULL") == {1}
    keyed = REJECTED_ONE.replace("field)", "field, message_key)").replace("NULL)", "NULL, :key)")
    async with engine.begin() as connection:
        await connection.execute(text(keyed), {"raw": b"{a", "key": "CONNECTIONS:7"})
        await connection.execute(text(keyed), {"raw": b"{b", "key": None})
        await connection.execute(text(keyed), {"raw": b"{c", "key": None})
    with pytest.raises(Exception, match=r"(?i)unique"):
        async with engine.begin() as connection:
            await connection.execute(text(keyed), {"raw": b"{a", "key": "CONNECTIONS:7"})
    assert await _scalars(engine, "SELECT count(*) FROM rejected_messages") == {4}
    await migrate(engine, "0002", downgrade=True)
    assert await _scalars(engine, "SELECT count(*) FROM rejected_messages") == {4}


async def test_upgrade_from_0002_with_rejections_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await _upgrade_from_0002_keeps_rejections_and_stores_a_message_once(engine)
    finally:
        await engine.dispose()


async def test_upgrade_from_0002_with_rejections_on_postgresql(fresh_postgres: str) -> None:
    engine = create_engine(fresh_postgres)
    try:
        await _upgrade_from_0002_keeps_rejections_and_stores_a_message_once(engine)
    finally:
        await engine.dispose()


async def _upgrade_from_0006_fills_the_connections_event_times(engine: AsyncEngine) -> None:
    """0007: connections in the projection before it get the event times of the records at their
    created and destroyed positions, as a rebuild would write them."""
    await migrate(engine, "0006")
    destroy = (
        INSERT_ONE.replace("(1, 1, 'e1'", "(2, 2, 'e2'")
        .replace("'connectionCreated', 1, 2", "'connectionDestroyed', 7, 8")
        .replace("NULL, NULL, false", "NULL, 'clientDisconnected', false")
        .replace(", 1)", ", 0)")
    )
    async with engine.begin() as connection:
        await connection.execute(
            text(INSERT_ONE.replace("'connectionCreated', 1, 2", "'connectionCreated', 5, 6"))
        )
        await connection.execute(text(destroy))
        await connection.execute(
            text(
                "INSERT INTO projection_connections (session_id, connection_id, live, creation_time, data, "
                "created_position, destroyed_position, reason) VALUES "
                "('s1', 'c1', false, 1, NULL, 1, 2, 'clientDisconnected'), "
                "('s1', 'c2', false, 1, NULL, NULL, 2, 'clientDisconnected'), "
                "('s1', 'c3', true, 1, NULL, 1, NULL, NULL)"
            )
        )
    await migrate(engine)
    assert await current_revision(engine) == SCHEMA_REVISION
    assert await _schema_differences(engine) == []
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT connection_id, created_event_time, destroyed_event_time "
                    "FROM projection_connections ORDER BY connection_id"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [("c1", 5, 7), ("c2", None, 7), ("c3", 5, None)]
    await migrate(engine, "0006", downgrade=True)
    assert await _scalars(engine, "SELECT count(*) FROM projection_connections") == {3}


async def test_upgrade_from_0006_with_connections_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await _upgrade_from_0006_fills_the_connections_event_times(engine)
    finally:
        await engine.dispose()


async def test_upgrade_from_0006_with_connections_on_postgresql(fresh_postgres: str) -> None:
    engine = create_engine(fresh_postgres)
    try:
        await _upgrade_from_0006_fills_the_connections_event_times(engine)
    finally:
        await engine.dispose()
