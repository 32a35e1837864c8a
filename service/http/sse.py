"""A session's live stream as Server-Sent Events, with the snapshot hand-off of CONTRACT 7:

1. one snapshot `connectionCreated` per connection live at position P, then `sessionConnected`
   with P, both read from one consistent snapshot of the projection (whose checkpoint is P);
2. every record of the session after P, as it is appended, with `id: <position>`.

Records after P are exactly what the snapshot does not reflect, so nothing is missed or sent
twice across the hand-off, whatever is appended meanwhile. A client that reconnects with
Last-Event-ID gets the records after that position, with no snapshot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

import orjson

from service.commit_signal import CommitSignal
from service.ledger.records import record_to_dict
from service.ledger.store import LedgerStore
from service.pipeline.queries import ProjectionQueries

__all__ = ["KEEPALIVE_SECONDS", "session_stream"]

KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 0.5


def _message(event: str, data: object, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def session_stream(
    session_id: str,
    queries: ProjectionQueries,
    store: LedgerStore,
    committed: CommitSignal,
    last_event_id: int | None,
    keepalive: float = KEEPALIVE_SECONDS,
) -> AsyncGenerator[bytes, None]:
    if last_event_id is None:
        snapshot = await queries.connections(session_id)
        position = int(snapshot["position"])
        for connection in snapshot["connections"]:
            yield _message(
                "connectionCreated",
                {
                    "type": "connectionCreated",
                    "sessionId": session_id,
                    "connection": connection,
                    "snapshot": True,
                },
            )
        yield _message(
            "sessionConnected", {"sessionId": session_id, "position": position, "count": snapshot["count"]}
        )
    else:
        position = last_event_id
    quiet_since = time.monotonic()
    while True:
        sent = False
        async with aclosing(store.records(after=position, session_id=session_id)) as pages:
            async for rows in pages:
                for row in rows:
                    record = record_to_dict(row)
                    yield _message(record["type"], record, record["position"])
                    position = record["position"]
                    sent = True
        if sent:
            quiet_since = time.monotonic()
            continue
        if time.monotonic() - quiet_since >= keepalive:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await committed.wait(POLL_SECONDS)
