"""A ledger with a history to ask about, imported by `connledger import` into a fresh database,
and the fold of its replay that checks what the service answers about it.

The input is generated traffic (`traffic_file`: sessions filling and emptying, duplicates,
destroys before their create) with one big session woven in at even intervals: BIG_SESSION
gains `live` connections over the first tenth of the lines, then loses one and gains another
`churn` times over the rest, so that from then on, at any position, it holds `live` or
`live - 1` connections and ends with `live`. Its events are stamped with the time of the line
before them. The file is written once and cached beside the traffic it is made of.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.harness.cpu import run_child
from bench.harness.databases import PostgresBackend, SqliteBackend
from bench.harness.figures import say
from bench.harness.service import CONNLEDGER
from bench.harness.traffic import DATA, traffic_file

__all__ = [
    "BIG_SESSION",
    "Fold",
    "HistoryLedger",
    "add_ledger_arguments",
    "describe",
    "event_span",
    "history_file",
    "history_file_of",
    "imported_ledger",
    "replay_lines",
]

BIG_SESSION = "bench-big-session"
_REASONS = ("clientDisconnected", "networkDisconnected", "forceDisconnected")


def _big_events(live: int, churn: int, seed: int) -> Iterator[tuple[str, str, str | None]]:
    """The big session's events in order: (type, connection id, reason)."""
    rng = random.Random(seed)
    members: list[str] = []
    for serial in range(live):
        members.append(f"big-{serial}")
        yield "connectionCreated", members[-1], None
    for serial in range(live, live + churn):
        gone = members.pop(rng.randrange(len(members)))
        yield "connectionDestroyed", gone, rng.choice(_REASONS)
        members.append(f"big-{serial}")
        yield "connectionCreated", members[-1], None


def _big_body(
    event: tuple[str, str, str | None], seed: int, serial: int, stamp: int, created: dict[str, int]
) -> dict[str, Any]:
    type_, connection, reason = event
    created.setdefault(connection, stamp)
    body: dict[str, Any] = {
        "id": f"big-{seed}-{serial}",
        "type": type_,
        "sessionId": BIG_SESSION,
        "timestamp": stamp,
        "connection": {
            "connectionId": connection,
            "creationTime": created[connection],
            "data": f"name=guest{connection.removeprefix('big-')}",
        },
    }
    if reason is not None:
        body["reason"] = reason
    return body


def history_file(events: int, seed: int, sessions: int, live: int = 1000, churn: int = 1000) -> Path:
    """`traffic_file(events, seed, sessions)` with BIG_SESSION's `live + 2 * churn` events woven
    in (see the module's doc); cached."""
    path = DATA / f"history-{events}-seed{seed}-sessions{sessions}-big{live}x{churn}.ndjson"
    if path.exists():
        return path
    source = traffic_file(events, seed, sessions)
    started = time.perf_counter()
    # Where each of the big session's events goes: before traffic line number `slot`.
    early = max(1, events // 10)
    slots = [i * early // live for i in range(live)]
    slots += [early + i * (events - early) // (2 * churn) for i in range(2 * churn)]
    big = _big_events(live, churn, seed)
    created: dict[str, int] = {}
    partial = path.with_suffix(".partial")
    with source.open("rb") as traffic, partial.open("wb") as out:
        serial = 0
        previous = b""
        for number, line in enumerate(traffic):
            if serial < len(slots) and slots[serial] <= number:
                stamp = int(orjson.loads(previous or line)["timestamp"])
                while serial < len(slots) and slots[serial] <= number:
                    out.write(orjson.dumps(_big_body(next(big), seed, serial, stamp, created)) + b"\n")
                    serial += 1
            out.write(line)
            previous = line
    partial.rename(path)
    say(f"wove {BIG_SESSION} into {path.name} in {time.perf_counter() - started:.1f} s")
    return path


def add_ledger_arguments(parser: argparse.ArgumentParser) -> None:
    """The shape of the ledger a script asks about: generated events, their sessions, the big
    session's connections and churn, the seed."""
    parser.add_argument("--events", type=int, default=1_000_000, help="generated events")
    parser.add_argument("--sessions", type=int, default=5000, help="sessions the generated events fall into")
    parser.add_argument("--big-live", type=int, default=1000, help="the big session's connections")
    parser.add_argument(
        "--big-churn", type=int, default=1000, help="times one of them leaves and a newcomer joins"
    )
    parser.add_argument("--seed", type=int, default=0)


def history_file_of(args: argparse.Namespace) -> Path:
    """history_file of the shape add_ledger_arguments parsed."""
    return history_file(args.events, args.seed, args.sessions, args.big_live, args.big_churn)


def describe(ledger: HistoryLedger, args: argparse.Namespace) -> str:
    """The ledger in a summary's heading."""
    return (
        f"a ledger of {ledger.head:,} records ({ledger.lines:,} lines imported: {args.events:,} "
        f"generated events over {args.sessions:,} sessions, and {BIG_SESSION}'s "
        f"{args.big_live + 2 * args.big_churn:,})"
    )


def event_span(path: Path) -> tuple[int, int]:
    """The first and the last event time of an input (ms): its first line's, and the latest of
    its last lines' (events arrive a little out of order)."""
    with path.open("rb") as lines:
        first = int(orjson.loads(lines.readline())["timestamp"])
        lines.seek(max(0, path.stat().st_size - 100_000))
        tail = lines.read().splitlines()[1:]
    return first, max(int(orjson.loads(line)["timestamp"]) for line in tail)


@dataclass
class HistoryLedger:
    """An imported ledger: its database, the environment of a command on it, and the import's
    summary (`appended` is the head)."""

    backend: str
    url: str
    env: dict[str, str]
    folder: Path
    lines: int
    summary: dict[str, int] = field(default_factory=dict)
    import_seconds: float = 0.0

    @property
    def head(self) -> int:
        return int(self.summary["appended"])

    def command(self, *argv: str) -> list[str]:
        return [str(CONNLEDGER), *argv]


def command_env(url: str) -> dict[str, str]:
    """This process's environment without its LEDGER_* settings, on the database `url`, with no
    hook (none is registered for the benchmarks: each event is taken as it is)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return env | {"LEDGER_DATABASE_URL": url, "LEDGER_HOOKS": ""}


@contextlib.asynccontextmanager
async def imported_ledger(
    backend: str, path: Path, folder: Path, admin_url: str
) -> AsyncIterator[HistoryLedger]:
    """`path` imported into a fresh database of `backend` ("sqlite": a file in `folder`;
    "postgresql": `bench_history_<random>` on the server of `admin_url`), dropped afterwards."""
    databases = SqliteBackend(folder) if backend == "sqlite" else PostgresBackend(admin_url, "bench_history")
    url = await databases.create()
    try:
        with path.open("rb") as counting:
            lines = sum(1 for _ in counting)
        ledger = HistoryLedger(backend, url, command_env(url), folder, lines)
        # migrate untimed: the schema, not the import.
        await asyncio.to_thread(run_child, ledger.command("migrate"), ledger.env, folder)
        run = await asyncio.to_thread(run_child, ledger.command("import", str(path)), ledger.env, folder)
        ledger.summary = orjson.loads(run.stdout)
        ledger.import_seconds = run.seconds
        say(f"  {backend}: imported {lines:,} lines in {run.seconds:.1f} s: {ledger.summary}")
        yield ledger
    finally:
        await databases.drop(url)


def replay_lines(ledger: HistoryLedger, into: Path) -> Path:
    """`connledger replay` of the whole ledger, written to `into` (untimed)."""
    with into.open("wb") as out:
        subprocess.run(ledger.command("replay"), env=ledger.env, cwd=ledger.folder, stdout=out, check=True)
    return into


class Fold:
    """The ledger's records folded in position order, independently of the service: each
    session's connections as the fold of service/projections/fold.py defines them (a connection
    is added by its first create, removed for good by its first destroy, and a destroy before
    any create leaves it out for good; a prevented event changes nothing)."""

    def __init__(self) -> None:
        # session -> connection id -> (live, position of the create, creationTime, data)
        self.sessions: dict[str, dict[str, tuple[bool, int, int, str | None]]] = {}
        self.position = 0

    def apply(self, record: dict[str, Any]) -> None:
        self.position = record["position"]
        if record["defaultPrevented"]:
            return
        connections = self.sessions.setdefault(record["sessionId"], {})
        connection = record["connection"]
        key = connection["connectionId"]
        state = connections.get(key)
        if record["type"] == "connectionCreated":
            if state is None:
                connections[key] = (True, self.position, connection["creationTime"], connection["data"])
        elif state is None or state[0]:
            connections[key] = (False, 0, 0, None)

    def count(self, session: str) -> int:
        return sum(1 for state in self.sessions.get(session, {}).values() if state[0])

    def connections(self, session: str) -> list[dict[str, Any]]:
        """The live set, in the order of the creates, as the answers list it."""
        live = sorted(
            (state[1], key, state[2], state[3])
            for key, state in self.sessions.get(session, {}).items()
            if state[0]
        )
        return [{"connectionId": k, "creationTime": t, "data": d} for _, k, t, d in live]
