"""Events the ledger appends itself: `origin` says why (expiry or reconcile, CONTRACT section
13), null on every producer's event, so records appended before this read with a null origin.

A nullable column added at the end: no row is rewritten, and the append-only triggers stay.
The expirer looks up live connections by creation time: a partial index on live ones only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("connection_ledger", sa.Column("origin", sa.String(16), nullable=True))
    op.create_index(
        "ix_projection_connections_live_age",
        "projection_connections",
        ["creation_time"],
        sqlite_where=sa.text("live"),
        postgresql_where=sa.text("live"),
    )


def downgrade() -> None:
    op.drop_index("ix_projection_connections_live_age", table_name="projection_connections")
    # Dropped in place, as for vendor_reason: a batch-mode rebuild would lose the triggers.
    op.execute("ALTER TABLE connection_ledger DROP COLUMN origin")
