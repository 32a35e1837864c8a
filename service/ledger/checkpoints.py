"""Named positions kept in the database beside the projection's own checkpoint: how far the
relay has published, so that a restart resumes where it stopped. (Written by
`LedgerStore.save_position`, which knows each database's writer discipline, and which never
moves one backwards.)"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.store import transient_errors

__all__ = ["read_checkpoint"]


async def read_checkpoint(engine: AsyncEngine, name: str) -> int:
    with transient_errors():
        async with engine.connect() as connection:
            value = await connection.scalar(
                text("SELECT position FROM projection_checkpoints WHERE name = :name"), {"name": name}
            )
    return int(value or 0)
