"""Alembic environment. `connledger migrate` hands over an open connection in
`config.attributes["connection"]`; `alembic` run by hand builds an engine from the settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from service.ledger.database import create_engine, migration_connection
from service.ledger.schema import metadata
from service.settings import load_settings

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(load_settings().resolved_database_url)
    try:
        async with migration_connection(engine) as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")

given = config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    asyncio.run(_run_async())
