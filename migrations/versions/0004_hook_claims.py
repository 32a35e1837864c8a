"""Hooks are decided once, whichever process sees an event first.

Two processes (two `serve` instances, or `serve` and `connledger import`) may hold copies of one
new event at the same moment (a producer's retry). Each looked it up, found it absent, and ran
the hooks; one appended it, the other found a duplicate, and the hooks had run twice. Before it
runs an event's hooks a process now claims the event in `hook_claims`; a process that finds the
event claimed by another leaves it to that one (the copy is handed back and is a duplicate by
the time it comes again). A claim is let go once its event is in the ledger; one left behind by
a process that died is taken over once it is older than LEDGER_HOOK_CLAIM_TIMEOUT.

A new, empty table: nothing of the ledger is touched.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hook_claims",
        sa.Column(
            "event_id",
            sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql"),
            primary_key=True,
        ),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hook_claims")
