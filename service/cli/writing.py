"""Commands that write to the database: migrate, import, rebuild."""

from __future__ import annotations

import sys
from typing import Any

import click

from service.app.process_tuning import settle_for_bulk_work
from service.cli.common import json_option, run_with_ledger
from service.cli.importer import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    MAX_REPORTED,
    import_stream,
    open_input,
)
from service.cli.output import Output
from service.pipeline.ledger_service import LedgerService

__all__ = ["import_", "migrate", "rebuild"]


@click.command()
def migrate() -> None:
    """Create or upgrade the database schema (the service does this at start too)."""

    async def work(ledger: LedgerService) -> None:
        return None

    run_with_ledger(work)
    click.echo("the database is at the latest schema", err=True)


@click.command("import")
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
        report = run_with_ledger(work)
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


@click.command()
def rebuild() -> None:
    """Drop the projections and rebuild them from the ledger (hooks are not called)."""

    async def work(ledger: LedgerService) -> int:
        return await ledger.store.rebuild()

    head = run_with_ledger(work, with_hooks=False)
    click.echo(f"projections rebuilt from the ledger up to position {head}", err=True)
