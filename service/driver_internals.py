"""The only place that reaches into nats-py's and aiosqlite's private attributes.

Three hot paths need what the libraries do not offer publicly:

- nats-py: queueing raw protocol commands on the client's pending-output buffer
  (`_send_command`, `_flush_pending`, what `publish` itself calls), so that a whole batch of
  acknowledgements, in-progress notices or chained publishes goes out as one write instead of
  one checked call per message; the buffer's size and limit (`_pending_data_size`,
  `_max_pending_size`), to refuse as `publish` does while reconnecting; and a message's
  `_ackd` flag, which `Msg.ack` keeps.
- aiosqlite: running a callable on the connection's own thread (`_execute`, `_conn`), so that
  an append of several statements is one hop to that thread instead of one per statement.

Each was checked against the versions in SUPPORTED; `pyproject.toml` bounds both dependencies
below their next minor version, and `check_versions()` (called by the composition root at
start-up, and by a unit test) refuses to run on another version with an error that says what
to do, rather than misbehave at the first batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, TypeVar

from service.errors import ConfigurationError

if TYPE_CHECKING:  # the ledger uses this module too, and needs nothing of NATS
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = [
    "SUPPORTED",
    "check_versions",
    "is_acked",
    "mark_acked",
    "on_sqlite_thread",
    "outbound_buffer_full",
    "queue_commands",
]

T = TypeVar("T")

# Distribution name -> the minor versions whose private attributes this module was written for.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "nats-py": ("2.16",),
    "aiosqlite": ("0.20", "0.21", "0.22"),
}


def check_versions(installed: Callable[[str], str] = version) -> None:
    """Raise ConfigurationError unless every library above is at a supported minor version."""
    for distribution, minors in SUPPORTED.items():
        found = installed(distribution)
        if ".".join(found.split(".")[:2]) not in minors:
            raise ConfigurationError(
                f"{distribution} {found} is installed, but this version of connection-ledger "
                f"supports {distribution} {' or '.join(m + '.x' for m in minors)} only; install "
                f"the versions in requirements.lock (pip install -r requirements.lock)"
            )


async def queue_commands(nc: Client, command: bytes) -> None:
    """Queue raw protocol commands (PUB/HPUB lines) for the client's flusher, as `publish`
    does. While reconnecting they wait in the same buffer and go out once connected again."""
    await nc._send_command(command)
    await nc._flush_pending()


def outbound_buffer_full(nc: Client, adding: int) -> bool:
    """Whether `adding` more bytes would overflow the buffer that holds output while the
    client reconnects (where `publish` raises OutboundBufferLimitError)."""
    return not nc.is_connected and adding + nc._pending_data_size > nc._max_pending_size


def is_acked(message: Msg) -> bool:
    return bool(message._ackd)


def mark_acked(message: Msg) -> None:
    """Record on the message that its acknowledgement was sent, as `Msg.ack` does, so that a
    later `ack()` of it raises MsgAlreadyAckdError instead of acknowledging twice."""
    message._ackd = True


def on_sqlite_thread(db: Any, work: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
    """Run `work(sqlite3 connection)` on the aiosqlite connection's thread, as one call."""
    result: Awaitable[T] = db._execute(work, db._conn)
    return result
