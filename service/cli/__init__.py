"""`connledger`: the ledger from the command line. An edge: it decodes arguments, calls the
ledger built by the composition root, and prints."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from typing import Any, TypeVar

import click
import orjson

from service.app.bootstrap import open_ledger
from service.app.process_tuning import settle_for_bulk_work
from service.cli.importer import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    MAX_REPORTED,
    import_stream,
    open_input,
)
from service.cli.loop import run
from service.cli.output import Output
from service.errors import ConfigurationError, TransientError
from service.events import is_session_id
from service.ledger.records import rejected_to_dict
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings, load_settings, settings_help

__all__ = ["main"]

T = TypeVar("T")


class SettingError(click.ClickException):
    """A configuration problem: the message names the setting; no usage text is printed."""

    exit_code = 2


DATABASE_HINT = "Check LEDGER_DATABASE_URL and that the database is up."
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON even on a terminal.")


def _run(work: Callable[[LedgerService], Awaitable[T]], **ledger_options: Any) -> T:
    """Open the ledger from the settings, run `work`, and turn known failures into messages."""

    async def runner() -> T:
        async with open_ledger(load_settings(), **ledger_options) as ledger:
            return await work(ledger)

    try:
        return run(runner())
    except ConfigurationError as error:
        raise SettingError(str(error)) from None
    except TransientError as error:
        raise click.ClickException(
            f"{error}. Check LEDGER_DATABASE_URL and that the database is up."
        ) from None


@click.group(epilog=settings_help(), context_settings={"max_content_width": 110})
def cli() -> None:
    """Connection Ledger: the authoritative, replayable record of who is connected to which
    realtime session."""


def _run_process(main: Callable[[Settings], Coroutine[Any, Any, int]]) -> None:
    """Run a long-lived command (serve, relay) with its logging, and exit with its status."""
    from service.logs import configure_logging

    configure_logging()
    try:
        status = run(main(load_settings()))
    except ConfigurationError as error:
        raise SettingError(str(error)) from None
    except TransientError as error:
        raise click.ClickException(f"{error}. {DATABASE_HINT}") from None
    sys.exit(status)


@cli.command()
def serve() -> None:
    """Run the service: NATS ingest, the ledger relay, and queries.

    With no LEDGER_NATS_URL it starts the bundled nats-server (JetStream under the var folder);
    with no LEDGER_DATABASE_URL it keeps the ledger in SQLite under the var folder."""
    from service.app.serve import serve

    _run_process(serve)


@cli.command()
@click.option("--watch-stdin", is_flag=True, hidden=True, help="Stop when standard input closes.")
def relay(watch_stdin: bool) -> None:
    """Run only the relay: every ledger record to the LEDGER stream, in position order.

    serve runs one itself (LEDGER_RELAY_MODE); run this beside instances that have
    LEDGER_RELAY_MODE=off. Needs LEDGER_NATS_URL."""
    from service.app.relay_command import run_relay

    _run_process(lambda settings: run_relay(settings, watch_stdin=watch_stdin))


@cli.command()
@click.option(
    "--rate", type=click.FloatRange(min=0.1), default=50.0, show_default=True, help="Events per second."
)
@click.option(
    "--sessions", type=click.IntRange(min=1), default=12, show_default=True, help="How many sessions."
)
@click.option(
    "--duration", type=click.FloatRange(min=0.1), default=None, help="Seconds to run (default: until Ctrl-C)."
)
@click.option("--seed", type=int, default=None, help="Seed for repeatable traffic (default: the time).")
@click.option(
    "--nats", "nats_url", default=None, help="NATS URL (default: LEDGER_NATS_URL, else var/nats.url)."
)
def simulate(
    rate: float, sessions: int, duration: float | None, seed: int | None, nats_url: str | None
) -> None:
    """Publish realistic connection traffic to a running service, to watch the dashboard move."""
    import time

    from service.redact import mask_nats_urls
    from service.simulation.run import nats_url_for_simulation
    from service.simulation.run import simulate as run_simulation

    settings = load_settings()
    url = nats_url or nats_url_for_simulation(settings)
    click.echo(
        f"publishing about {rate:g} events/s over {sessions} sessions to {mask_nats_urls(url)}; Ctrl-C stops",
        err=True,
    )

    def report(sent: int, elapsed: float) -> None:
        click.echo(f"\r{sent} events in {elapsed:.0f} s", nl=False, err=True)

    try:
        sent = run(
            run_simulation(
                settings,
                url,
                rate,
                sessions,
                duration,
                seed if seed is not None else int(time.time()),
                report,
            )
        )
    except KeyboardInterrupt:
        click.echo("\nstopped", err=True)
        return
    except ConfigurationError as error:
        raise SettingError(str(error)) from None
    click.echo(f"\npublished {sent} events", err=True)


@cli.command()
def asyncapi() -> None:
    """Print the AsyncAPI 3.0 document of the NATS interface (docs/asyncapi.json)."""
    from service.nats.application import asyncapi_document

    document = asyncapi_document(load_settings())
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (the service does this at start too)."""

    async def work(ledger: LedgerService) -> None:
        return None

    _run(work)
    click.echo("the database is at the latest schema", err=True)


@cli.command("import")
@click.argument("path", metavar="FILE|-")
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH_SIZE),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Lines appended per transaction.",
)
@json_option
def import_(path: str, batch_size: int, as_json: bool) -> None:
    """Import NDJSON events (native or Vonage bodies) from FILE, or stdin with '-'.

    Runs the hooks; rejected lines are stored (see `connledger rejected`), never fatal."""
    out = Output(as_json)
    try:
        stream, name, size = open_input(path)
    except OSError as error:
        raise click.BadParameter(f"cannot read {path!r}: {error.strerror}", param_hint="FILE") from None

    async def work(ledger: LedgerService) -> Any:
        settle_for_bulk_work()
        if not sys.stderr.isatty():
            return await import_stream(ledger.pipeline, stream, name, batch_size)
        from rich.progress import BarColumn, Progress, TransferSpeedColumn

        with Progress(
            *Progress.get_default_columns(), BarColumn(), TransferSpeedColumn(), transient=True
        ) as bar:
            task = bar.add_task(f"importing {name}", total=size)
            return await import_stream(
                ledger.pipeline,
                stream,
                name,
                batch_size,
                lambda done: bar.update(task, completed=done),
            )

    try:
        report = _run(work)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    for line, rejected in report.rejected_lines:
        field = f" ({rejected.field})" if rejected.field else ""
        click.echo(f"line {line}: {rejected.code.value}{field}: {rejected.message}", err=True)
    if report.rejected > MAX_REPORTED:
        click.echo(
            f"... and {report.rejected - MAX_REPORTED} more rejected lines: "
            "`connledger rejected` lists them all",
            err=True,
        )
    out.document(report.summary(), title=f"import {name}")


def _session_id(_: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """A session id as the contract allows it, else click's usage error naming the option."""
    if value is not None and not is_session_id(value):
        raise click.BadParameter(
            f"{value!r}: a sessionId is 1 to 256 characters of A-Z a-z 0-9 - _ ~ = :", param=parameter
        )
    return value


@cli.command()
@click.argument("session_id", metavar="SESSION", callback=_session_id)
@json_option
def count(session_id: str, as_json: bool) -> None:
    """A session's live connection count."""
    out = Output(as_json)

    async def work(ledger: LedgerService) -> dict[str, Any]:
        return await ledger.queries.count(session_id)

    out.document(_run(work, with_hooks=False), title=f"session {session_id}")


@cli.command()
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

    rows = _run(work, with_hooks=False)
    if not out.json:
        out.table(["session", "count"], ([s["sessionId"], s["count"]] for s in rows))
    out.flush()


@cli.command()
@click.option(
    "--session", "session_id", metavar="ID", callback=_session_id, help="Only this session's records."
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

    _run(work, with_hooks=False)


@cli.command()
def rebuild() -> None:
    """Drop the projections and rebuild them from the ledger (hooks are not called)."""

    async def work(ledger: LedgerService) -> int:
        return await ledger.store.rebuild()

    head = _run(work, with_hooks=False)
    click.echo(f"projections rebuilt from the ledger up to position {head}", err=True)


@cli.command()
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

    _run(work, with_hooks=False)


def main() -> None:
    cli(prog_name="connledger")
