"""A rejected NATS message is stored once, however often it is delivered.

A batch committed and then not acknowledged (a crash, a lost connection between the commit and
the ack) is delivered again, and its rejections were stored again with it. Each rejection of a
NATS message now carries the message's identity, `<stream>:<stream sequence>:<time stored>`, in
`rejected_messages.message_key`, under a unique index; the append inserts it with ON CONFLICT DO
NOTHING. Rejections from HTTP and import keep NULL there (they have no such identity, and NULLs
never collide). Rows stored before this migration keep NULL too.

A nullable column without a default and an index on it: no row is rewritten. The index build
holds off inserts into rejected_messages (not into the ledger) while it reads the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rejected_messages", sa.Column("message_key", sa.String(300), nullable=True))
    op.create_index("uq_rejected_messages_message_key", "rejected_messages", ["message_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_rejected_messages_message_key", table_name="rejected_messages")
    # SQLite drops a column by copying the table (batch mode); PostgreSQL in place.
    with op.batch_alter_table("rejected_messages") as batch:
        batch.drop_column("message_key")
