"""`connledger usage`: connection usage over a window of event time (CONTRACT section 12), of
one session or of every session with a record, as NDJSON or CSV, streamed a page of sessions at
a time (constant memory), with a progress bar on a terminal."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable
from contextlib import aclosing
from typing import Any

import click
import orjson

from service.app.process_tuning import settle_for_bulk_work
from service.cli.common import run_query, session_id
from service.events import MAX_POSITION, NATIVE_REASONS
from service.pipeline.ledger_service import LedgerService
from service.pipeline.queries import UsageWindow
from service.projections.usage import UNKNOWN_REASON

__all__ = ["CSV_COLUMNS", "csv_rows", "usage"]

REASONS = (*sorted(NATIVE_REASONS), UNKNOWN_REASON)
CSV_COLUMNS = (
    "sessionId",
    "from",
    "to",
    "peakCount",
    "peakTimestamp",
    "connectionMilliseconds",
    "connections",
    "open",
    *REASONS,
    "position",
)


def csv_rows(answers: Iterable[dict[str, Any]]) -> str:
    """Usage answers as CSV lines (no header): a column per destroy reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for a in answers:
        reasons = a["byReason"]
        writer.writerow(
            [
                a["sessionId"],
                a["from"],
                a["to"],
                a["peak"]["count"],
                "" if a["peak"]["timestamp"] is None else a["peak"]["timestamp"],
                a["connectionMilliseconds"],
                a["connections"],
                a["open"],
                *(reasons.get(reason, 0) for reason in REASONS),
                a["position"],
            ]
        )
    return buffer.getvalue()


_TIME = click.IntRange(0, MAX_POSITION)


@click.command()
@click.option(
    "--session", "session", metavar="ID", callback=session_id, help="Only this session (default: every one)."
)
@click.option("--from", "start", type=_TIME, metavar="MS", help="Window start, ms of event time (default 0).")
@click.option("--to", "end", type=_TIME, metavar="MS", help="Window end, ms, excluded (default now).")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["ndjson", "csv"]),
    default="ndjson",
    show_default=True,
    help="One JSON document per session, or CSV with a header.",
)
def usage(session: str | None, start: int | None, end: int | None, format_: str) -> None:
    """Connection usage over [--from, --to): peak concurrency and when, connection-milliseconds,
    distinct connections, destroys by reason, still open. Every session with a record unless
    --session names one; a session with none has an empty usage."""
    window = UsageWindow(start, end)
    out = sys.stdout

    def write(answers: list[dict[str, Any]]) -> None:
        if format_ == "csv":
            out.write(csv_rows(answers))
        else:
            out.write("".join(orjson.dumps(a).decode() + "\n" for a in answers))

    async def work(ledger: LedgerService) -> None:
        queries = ledger.queries
        # One `to` for every session: the window of "now" is fixed when the command starts.
        fixed = UsageWindow(*window.resolve())
        if format_ == "csv":
            out.write(",".join(CSV_COLUMNS) + "\n")
        if session is not None:
            write([await queries.usage(session, fixed)])
            return
        settle_for_bulk_work()
        pages = queries.usage_of_every_session(fixed)
        if not sys.stderr.isatty():
            async with aclosing(pages):
                async for page in pages:
                    write(page)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress

        total = await queries.session_total()
        with Progress(
            *Progress.get_default_columns(), BarColumn(), MofNCompleteColumn(), transient=True
        ) as bar:
            task = bar.add_task("usage", total=total)
            async with aclosing(pages):
                async for page in pages:
                    write(page)
                    bar.advance(task, len(page))

    run_query(work, with_hooks=False)
    out.flush()
