"""Realistic connection traffic, deterministic for a seed: sessions filling and emptying,
network drops and forced disconnects, recorder connections, producer retries (duplicates) and
destroys that overtake their create. Used by the benchmarks and tests, and by anyone who wants
a file to import. Pure: yields bodies, does no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson

__all__ = ["generate"]

_REASONS = ("clientDisconnected", "clientDisconnected", "networkDisconnected", "forceDisconnected")
_EPOCH = 1_732_700_000_000


def _body(
    event_id: str,
    type_: str,
    session: str,
    at: int,
    connection: str,
    created: int,
    data: str,
    reason: str | None,
    vonage: bool,
) -> dict[str, Any]:
    if vonage:
        body: dict[str, Any] = {
            "sessionId": session,
            "projectId": "46000000",
            "event": type_,
            "timestamp": at,
            "connection": {"id": connection, "createdAt": created, "data": data},
        }
        if reason is not None:
            body["reason"] = reason
        return body
    body = {
        "id": event_id,
        "type": type_,
        "sessionId": session,
        "timestamp": at,
        "connection": {"connectionId": connection, "creationTime": created, "data": data},
    }
    if reason is not None:
        body["reason"] = reason
    return body


def generate(
    count: int,
    *,
    seed: int = 0,
    sessions: int | None = None,
    duplicate_rate: float = 0.02,
    swap_rate: float = 0.02,
    vonage_rate: float = 0.05,
    recorder_rate: float = 0.03,
    epoch_ms: int = _EPOCH,
) -> Iterator[bytes]:
    """`count` NDJSON bodies (without newlines), with times starting at `epoch_ms`."""
    rng = random.Random(seed)
    session_count = sessions or max(1, count // 200)
    names = [f"2_MX40NTU0NjQ3Mn5-{seed}-{i:07d}-fg" for i in range(session_count)]
    live: list[list[tuple[str, int, str, bool]]] = [[] for _ in names]
    recent: list[bytes] = []
    emitted = 0
    serial = 0
    clock = epoch_ms
    pending: list[bytes] = []
    while emitted < count:
        if pending:
            line = pending.pop()
        elif recent and rng.random() < duplicate_rate:
            line = rng.choice(recent)  # a producer's retry: the very same event again
        else:
            clock += rng.randint(1, 40)
            index = rng.randrange(session_count)
            members = live[index]
            session = names[index]
            serial += 1
            if members and rng.random() < min(0.9, len(members) / 12):
                connection, created, data, vonage = members.pop(rng.randrange(len(members)))
                reason = rng.choice(_REASONS)
                line = orjson.dumps(
                    _body(
                        f"ev-{seed}-{serial}",
                        "connectionDestroyed",
                        session,
                        clock,
                        connection,
                        created,
                        data,
                        reason,
                        vonage,
                    )
                )
            else:
                connection = f"c-{seed}-{serial:x}"
                data = "role=recorder" if rng.random() < recorder_rate else f"name=user{serial % 9973}"
                vonage = rng.random() < vonage_rate
                create = orjson.dumps(
                    _body(
                        f"ev-{seed}-{serial}",
                        "connectionCreated",
                        session,
                        clock,
                        connection,
                        clock,
                        data,
                        None,
                        vonage,
                    )
                )
                if rng.random() < swap_rate:
                    # The leave overtakes the join: destroy first, then the late create.
                    serial += 1
                    destroy = orjson.dumps(
                        _body(
                            f"ev-{seed}-{serial}",
                            "connectionDestroyed",
                            session,
                            clock + 5,
                            connection,
                            clock,
                            data,
                            "networkDisconnected",
                            vonage,
                        )
                    )
                    pending.append(create)
                    line = destroy
                else:
                    members.append((connection, clock, data, vonage))
                    line = create
        if len(recent) < 1000:
            recent.append(line)
        else:
            recent[rng.randrange(1000)] = line
        emitted += 1
        yield line
