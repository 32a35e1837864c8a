"""Events from other platforms' webhooks: the ledger gains `vendor_reason`, the platform's own
reason for a destroy as it sent it. The event's source (native, vonage, livekit, twilio, agora)
is the existing `source_format` column, so records appended before this keep the source they
had (native or vonage) and read with a null vendorReason.

A nullable column added at the end: no row is rewritten, and the append-only triggers stay.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("connection_ledger", sa.Column("vendor_reason", sa.Text, nullable=True))


def downgrade() -> None:
    # SQLite drops a column by rebuilding the table (batch mode), which the append-only
    # triggers would not survive: the column is dropped in place, as SQLite 3.35+ can.
    op.execute("ALTER TABLE connection_ledger DROP COLUMN vendor_reason")
