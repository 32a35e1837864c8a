"""Tables, in SQLAlchemy Core. The database itself is created only by the Alembic migrations
in `migrations/`; this module describes the same tables for queries (a test checks that the
two agree).

Times are integer epoch milliseconds everywhere: SQLite has no zone-aware timestamp type, and
the contract speaks in milliseconds.

Identifiers (event, session, connection ids) compare as bytes on both databases: SQLite's
BINARY collation, PostgreSQL's "C". They are opaque keys, not words, so a locale's order means
nothing for them, and under any other collation PostgreSQL compares through the locale
(strcoll), which made inserting ledger rows into their indexes a third slower (migration 0002).
It also gives the session listing's cursor the same order on both.

A rejected NATS message is stored once: `rejected_messages.message_key` names it by stream and
stream sequence, under a unique index, and a redelivery's rejection is skipped on conflict
(migration 0003).

`hook_claims` holds the events whose hooks a process is running now, so that two processes
holding copies of one new event never both run them (migration 0004, pipeline/batches.py).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeEngine

__all__ = [
    "LEDGER_COLUMNS",
    "checkpoints",
    "connection_ledger",
    "hook_claims",
    "ledger_sessions",
    "metadata",
    "projection_connections",
    "projection_sessions",
    "rejected_messages",
]


def _id(length: int) -> TypeEngine[str]:
    """An identifier column: compared as bytes (see the module's docstring)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


# SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid); PostgreSQL wants BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

connection_ledger = Table(
    "connection_ledger",
    metadata,
    # Assigned by the append path under the writer lock, never by a database sequence: see
    # ledger/postgres.py for why that is what keeps positions gap-free and in commit order.
    Column("position", BigId, primary_key=True, autoincrement=False),
    Column("sequence", BigInteger, nullable=False),
    Column("event_id", _id(128), nullable=False),
    Column("session_id", _id(256), nullable=False),
    Column("type", String(32), nullable=False),
    Column("event_time", BigInteger, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
    Column("connection_id", _id(256), nullable=False),
    Column("creation_time", BigInteger, nullable=False),
    Column("data", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("default_prevented", Boolean, nullable=False),
    Column("prevented_by", Text, nullable=True),
    Column("hook_failures", Text, nullable=True),
    Column("source_format", String(16), nullable=False),
    Column("project_id", String(256), nullable=True),
    Column("count_after", BigInteger, nullable=False),
    # The platform's own reason for a destroy (CONTRACT section 11); last, as migration 0005
    # added it. The event's source is `source_format`: native, vonage, livekit, twilio, agora.
    Column("vendor_reason", Text, nullable=True),
    # Why the ledger appended an event no producer sent: expiry or reconcile (CONTRACT section
    # 13); null on producers' events. Last, as migration 0006 added it.
    Column("origin", String(16), nullable=True),
    UniqueConstraint("event_id", name="uq_connection_ledger_event_id"),
    UniqueConstraint("session_id", "sequence", name="uq_connection_ledger_session_sequence"),
)

# The column order of a ledger row as the append path writes it and the readers read it.
LEDGER_COLUMNS: tuple[str, ...] = tuple(c.name for c in connection_ledger.columns)

# Ledger bookkeeping, not a projection: each session's last sequence number.
ledger_sessions = Table(
    "ledger_sessions",
    metadata,
    Column("session_id", _id(256), primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
    Column("first_position", BigInteger, nullable=False),
    Column("last_position", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

projection_connections = Table(
    "projection_connections",
    metadata,
    Column("session_id", _id(256), primary_key=True),
    Column("connection_id", _id(256), primary_key=True),
    # False is a tombstone: the connection was destroyed and never comes back.
    Column("live", Boolean, nullable=False),
    Column("creation_time", BigInteger, nullable=False),
    Column("data", Text, nullable=True),
    Column("created_position", BigInteger, nullable=True),
    Column("destroyed_position", BigInteger, nullable=True),
    Column("reason", Text, nullable=True),
    # The event times (`timestamp`) of the records at created_position and destroyed_position:
    # a connection's life for usage, read without a lookup of the ledger per connection.
    Column("created_event_time", BigInteger, nullable=True),
    Column("destroyed_event_time", BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

projection_sessions = Table(
    "projection_sessions",
    metadata,
    Column("session_id", _id(256), primary_key=True),
    Column("count", BigInteger, nullable=False),
    CheckConstraint("count >= 0", name="ck_projection_sessions_count_not_negative"),
    sqlite_with_rowid=False,
)
Index("ix_projection_sessions_active", projection_sessions.c.count)
# The expirer's look-up of live connections by age; tombstones, the most rows, are left out.
Index(
    "ix_projection_connections_live_age",
    projection_connections.c.creation_time,
    sqlite_where=projection_connections.c.live,
    postgresql_where=projection_connections.c.live,
)

checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

rejected_messages = Table(
    "rejected_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("received_at", BigInteger, nullable=False),
    Column("source", String(16), nullable=False),
    Column("subject", Text, nullable=True),
    Column("headers", Text, nullable=True),
    Column("raw", LargeBinary, nullable=False),
    Column("code", String(32), nullable=False),
    Column("message", Text, nullable=False),
    Column("field", Text, nullable=True),
    # The NATS message it came from, `<stream>:<stream sequence>:<time stored>` (migration
    # 0003): unique, so that a message delivered again after its batch committed is not stored
    # twice. NULL for HTTP and import, which have no such identity (NULLs never collide).
    Column("message_key", String(300), nullable=True),
)
Index("ix_rejected_messages_code", rejected_messages.c.code)
Index("uq_rejected_messages_message_key", rejected_messages.c.message_key, unique=True)

hook_claims = Table(
    "hook_claims",
    metadata,
    Column("event_id", _id(128), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("claimed_at", BigInteger, nullable=False),
)
