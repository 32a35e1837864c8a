"""Commands that read the ledger and its projections: count and connections (now, or as of a
position or a time), sessions, replay, rejected. They open the ledger without hooks: reading
never calls one."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import click
import orjson

from service.app.process_tuning import settle_for_bulk_work
from service.cli.common import json_option, run_query, session_id
from service.cli.output import Output
from service.events import MAX_POSITION
from service.ledger.records import rejected_to_dict
from service.pipeline.ledger_service import LedgerService
from service.pipeline.queries import AsOf

__all__ = ["connections", "count", "rejected", "replay", "sessions"]


def _as_of(command: Callable[..., None]) -> Callable[..., None]:
    """--at and --as-of: answer as of a ledger position, or of a time."""
    command = click.option(
        "--as-of",
        "as_of",
        type=click.IntRange(0, MAX_POSITION),
        metavar="MS",
        help="As of the last record recorded at or before this time (ms since the epoch).",
    )(command)
    return click.option(
        "--at",
        type=click.IntRange(0, MAX_POSITION),
        metavar="N",
        help="As of this ledger position (at most the head).",
    )(command)


@click.command()
@click.argument("session_id", metavar="SESSION", callback=session_id)
@_as_of
@json_option
def count(session_id: str, at: int | None, as_of: int | None, as_json: bool) -> None:
    """A session's live connection count: now, or as of --at a position or --as-of a time."""
    out = Output(as_json)

    async def work(ledger: LedgerService) -> dict[str, Any]:
        return await ledger.queries.count(session_id, AsOf(at, as_of).check())

    out.document(run_query(work, with_hooks=False), title=f"session {session_id}")


@click.command()
@click.argument("session_id", metavar="SESSION", callback=session_id)
@_as_of
@json_option
def connections(session_id: str, at: int | None, as_of: int | None, as_json: bool) -> None:
    """A session's live connections: now, or as of --at a position or --as-of a time."""
    out = Output(as_json)

    async def work(ledger: LedgerService) -> dict[str, Any]:
        return await ledger.queries.connections(session_id, AsOf(at, as_of).check())

    answer = run_query(work, with_hooks=False)
    if out.json:
        out.document(answer)
        return
    out.table(
        ["connection", "created", "data"],
        ([c["connectionId"], c["creationTime"], c["data"]] for c in answer["connections"]),
        title=f"session {session_id}: {answer['count']} at position {answer['position']}",
    )


@click.command()
@click.option("--all", "everything", is_flag=True, help="Every session with a record, not only active ones.")
@json_option
def sessions(everything: bool, as_json: bool) -> None:
    """Sessions with their counts: active ones, or --all."""
    out = Output(as_json)

    async def work(ledger: LedgerService) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await ledger.queries.sessions(active=not everything, limit=1000, cursor=cursor)
            if out.json:
                out.lines(orjson.dumps(s) for s in page.sessions)
            else:
                found.extend(page.sessions)
            if page.next is None:
                return found
            cursor = page.next

    rows = run_query(work, with_hooks=False)
    if not out.json:
        out.table(["session", "count"], ([s["sessionId"], s["count"]] for s in rows))
    out.flush()


@click.command()
@click.option(
    "--session", "session_id", metavar="ID", callback=session_id, help="Only this session's records."
)
@click.option("--after", type=click.IntRange(min=0), default=0, help="Records after this position.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many records.")
@json_option
def replay(session_id: str | None, after: int, limit: int | None, as_json: bool) -> None:
    """Ledger records in position order, as NDJSON (streamed, any size)."""
    out = Output(as_json)

    async def work(ledger: LedgerService) -> None:
        settle_for_bulk_work()
        if out.json:
            # Encoded by the database, a page at a time (see ledger/records.py): the bytes of
            # record_json, several times faster than encoding each record here.
            lines = ledger.store.record_lines(after=after, session_id=session_id, limit=limit)
            async with aclosing(lines) as chunks:
                async for chunk in chunks:
                    out.stdout.write(chunk)
            out.flush()
            return
        records = ledger.store.records(after=after, session_id=session_id, limit=limit)
        async with aclosing(records) as pages:
            async for rows in pages:
                out.table(
                    ["position", "seq", "session", "type", "connection", "reason", "prevented", "count"],
                    (
                        [r[0], r[1], r[3], r[4], r[7], r[10], r[12] or bool(r[11]), r[13]]
                        for r in map(tuple, rows)
                    ),
                )
        out.flush()

    run_query(work, with_hooks=False)


@click.command()
@click.option("--after", type=click.IntRange(min=0), default=0, help="Rejections after this id.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@json_option
def rejected(after: int, limit: int | None, as_json: bool) -> None:
    """Messages that could not be appended, with why (the raw bytes base64 in JSON)."""
    out = Output(as_json)

    async def work(ledger: LedgerService) -> None:
        async with aclosing(ledger.store.rejected(after=after, limit=limit)) as pages:
            async for rows in pages:
                items = [rejected_to_dict(r) for r in rows]
                if out.json:
                    out.lines(orjson.dumps(i) for i in items)
                else:
                    out.table(
                        ["id", "received", "source", "code", "field", "message"],
                        (
                            [i["id"], i["receivedAt"], i["source"], i["code"], i["field"], i["message"]]
                            for i in items
                        ),
                    )
        out.flush()

    run_query(work, with_hooks=False)
