"""A connection's life for usage (CONTRACT section 12) without a lookup of the ledger per
connection: the projection keeps the event times (`timestamp`) of the records at its
created_position and destroyed_position.

Two nullable columns added at the end, then filled from the ledger by position in one statement
each: the projection is derived data, so this is what `connledger rebuild` would write.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("projection_connections", sa.Column("created_event_time", sa.BigInteger(), nullable=True))
    op.add_column("projection_connections", sa.Column("destroyed_event_time", sa.BigInteger(), nullable=True))
    for column, position in (
        ("created_event_time", "created_position"),
        ("destroyed_event_time", "destroyed_position"),
    ):
        op.execute(
            f"UPDATE projection_connections SET {column} = (SELECT l.event_time FROM connection_ledger l "
            f"WHERE l.position = projection_connections.{position}) WHERE {position} IS NOT NULL"
        )


def downgrade() -> None:
    # Dropped in place (SQLite 3.35 and later drop a column without copying the table).
    op.execute("ALTER TABLE projection_connections DROP COLUMN destroyed_event_time")
    op.execute("ALTER TABLE projection_connections DROP COLUMN created_event_time")
