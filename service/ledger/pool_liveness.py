"""Liveness checks of pooled PostgreSQL connections, only for connections that have been idle.

A pooled connection can be dead when it is taken: the server restarted, or a proxy or
firewall dropped it while it sat in the pool. SQLAlchemy's `pool_pre_ping` finds out with a
round trip at every checkout, and the service checks connections out all the time: ingest
twice a batch, the relay once a read, every query once. Under a steady trickle of events that
was three round trips a batch, a fifth of the relay's CPU and a share of the server's.

A connection returned to the pool a moment ago was alive a moment ago, so, as in HikariCP
(whose `aliveBypassWindowMs` is 500 ms), only a connection that has been idle for longer than
IDLE_BEFORE_PING is pinged. A failure within that window is not lost: the statement fails as a
disconnect, SQLAlchemy invalidates the pool, the error is transient (store.py), and the caller
retries on a new connection, as it does for a failure halfway through a transaction.
"""

from __future__ import annotations

import time
from typing import Any, Final

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["IDLE_BEFORE_PING", "ping_after_idle"]

IDLE_BEFORE_PING: Final = 1.0  # seconds
_RETURNED_AT = "connection_ledger_returned_at"


def ping_after_idle(engine: AsyncEngine, idle_seconds: float = IDLE_BEFORE_PING) -> None:
    """Check a connection with a round trip at checkout when it has been in the pool for more
    than `idle_seconds`; a dead one invalidates the pool, which then connects anew."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "connect")
    def _connected(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(sync_engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _taken(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # Runs inside SQLAlchemy's greenlet for the async driver, so the ping may wait on it.
        if time.monotonic() - record.info.get(_RETURNED_AT, float("-inf")) <= idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # As pool_pre_ping does: every connection made before now is suspect.
                raise exc.InvalidatePoolError() from error
            raise
