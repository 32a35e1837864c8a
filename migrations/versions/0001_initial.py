"""The ledger, its projections, the rejected store, and the ledger's immutability triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The ledger is append-only in the database itself, not only in the code: whoever connects,
# UPDATE, DELETE and (PostgreSQL) TRUNCATE on connection_ledger fail.
SQLITE_TRIGGERS = [
    """CREATE TRIGGER connection_ledger_no_update BEFORE UPDATE ON connection_ledger
       BEGIN SELECT RAISE(ABORT, 'connection_ledger is append-only: UPDATE is refused'); END""",
    """CREATE TRIGGER connection_ledger_no_delete BEFORE DELETE ON connection_ledger
       BEGIN SELECT RAISE(ABORT, 'connection_ledger is append-only: DELETE is refused'); END""",
]
POSTGRES_TRIGGERS = [
    """CREATE FUNCTION connection_ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'connection_ledger is append-only: % is refused', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    # Statement-level, so that even an UPDATE or DELETE matching no row is refused.
    """CREATE TRIGGER connection_ledger_no_update_delete
       BEFORE UPDATE OR DELETE ON connection_ledger
       FOR EACH STATEMENT EXECUTE FUNCTION connection_ledger_refuse_change()""",
    """CREATE TRIGGER connection_ledger_no_truncate
       BEFORE TRUNCATE ON connection_ledger
       FOR EACH STATEMENT EXECUTE FUNCTION connection_ledger_refuse_change()""",
]


def upgrade() -> None:
    op.create_table(
        "connection_ledger",
        sa.Column("position", BigId, primary_key=True, autoincrement=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(256), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("event_time", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
        sa.Column("connection_id", sa.String(256), nullable=False),
        sa.Column("creation_time", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("default_prevented", sa.Boolean, nullable=False),
        sa.Column("prevented_by", sa.Text, nullable=True),
        sa.Column("hook_failures", sa.Text, nullable=True),
        sa.Column("source_format", sa.String(16), nullable=False),
        sa.Column("project_id", sa.String(256), nullable=True),
        sa.Column("count_after", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("event_id", name="uq_connection_ledger_event_id"),
        sa.UniqueConstraint("session_id", "sequence", name="uq_connection_ledger_session_sequence"),
    )
    op.create_table(
        "ledger_sessions",
        sa.Column("session_id", sa.String(256), primary_key=True),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("first_position", sa.BigInteger, nullable=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "projection_connections",
        sa.Column("session_id", sa.String(256), primary_key=True),
        sa.Column("connection_id", sa.String(256), primary_key=True),
        sa.Column("live", sa.Boolean, nullable=False),
        sa.Column("creation_time", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=True),
        sa.Column("created_position", sa.BigInteger, nullable=True),
        sa.Column("destroyed_position", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "projection_sessions",
        sa.Column("session_id", sa.String(256), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.CheckConstraint("count >= 0", name="ck_projection_sessions_count_not_negative"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_projection_sessions_active", "projection_sessions", ["count"])
    op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "rejected_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("headers", sa.Text, nullable=True),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("field", sa.Text, nullable=True),
    )
    op.create_index("ix_rejected_messages_code", "rejected_messages", ["code"])

    triggers = SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else POSTGRES_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    # Dropping the table drops its triggers; PostgreSQL's trigger function goes after it.
    op.drop_table("connection_ledger")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION connection_ledger_refuse_change()")
    op.drop_index("ix_rejected_messages_code", table_name="rejected_messages")
    op.drop_table("rejected_messages")
    op.drop_table("projection_checkpoints")
    op.drop_index("ix_projection_sessions_active", table_name="projection_sessions")
    op.drop_table("projection_sessions")
    op.drop_table("projection_connections")
    op.drop_table("ledger_sessions")
