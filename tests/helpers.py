"""Small builders shared by the tests."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from service.inbound import Incoming
from service.ledger.postgres import LEDGER_LOCK

CREATED = "connectionCreated"
DESTROYED = "connectionDestroyed"


def body(
    event_id: str,
    type_: str = CREATED,
    session: str = "s1",
    connection: str = "c1",
    *,
    reason: str | None = None,
    data: str | None = "name=Ana",
    timestamp: int = 1_732_700_000_123,
    creation_time: int = 1_732_699_990_000,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": event_id,
        "type": type_,
        "sessionId": session,
        "timestamp": timestamp,
        "connection": {"connectionId": connection, "creationTime": creation_time, "data": data},
    }
    if type_ == DESTROYED:
        document["reason"] = reason or "clientDisconnected"
    elif reason is not None:
        document["reason"] = reason
    return document


def incoming(document: dict[str, Any] | bytes, subject: str | None = None, source: str = "test") -> Incoming:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    return Incoming(raw, 1_732_700_000_000, source, subject)


def created(event_id: str, session: str = "s1", connection: str = "c1", **kw: Any) -> Incoming:
    return incoming(body(event_id, CREATED, session, connection, **kw))


def destroyed(event_id: str, session: str = "s1", connection: str = "c1", **kw: Any) -> Incoming:
    return incoming(body(event_id, DESTROYED, session, connection, **kw))


def stalled_http_reader(url: str, path: str) -> socket.socket:
    """A client that asks `url` for `path` and then reads nothing, with a receive buffer as
    small as the kernel allows: the server's sends soon wait on it."""
    host, port = url.removeprefix("http://").split(":")
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect((host, int(port)))
    reader.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return reader


@asynccontextmanager
async def writer_lock_held(database_url: str) -> AsyncIterator[None]:
    """Hold the ledger's writer lock, as a long append, import or `connledger rebuild` holds it,
    until the block ends: writers that start meanwhile wait for it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database or "", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", LEDGER_LOCK)
            yield
    finally:
        await connection.close()


# Projection rows whose event times are not those of the ledger's records at their created and
# destroyed positions (none, when the projection keeps them right). IS DISTINCT FROM: SQLite
# 3.39 and later, and PostgreSQL.
EVENT_TIMES_THAT_DIFFER = (
    "SELECT p.session_id, p.connection_id, p.created_event_time, c.event_time, "
    "p.destroyed_event_time, d.event_time FROM projection_connections p "
    "LEFT JOIN connection_ledger c ON c.position = p.created_position "
    "LEFT JOIN connection_ledger d ON d.position = p.destroyed_position "
    "WHERE p.created_event_time IS DISTINCT FROM c.event_time "
    "OR p.destroyed_event_time IS DISTINCT FROM d.event_time"
)
