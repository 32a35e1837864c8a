"""`connledger`: the ledger from the command line. An edge: it decodes arguments, calls the
ledger built by the composition root, and prints.

This module assembles the command groups, each in a module of its own: running.py (serve,
relay, simulate), writing.py (migrate, import, rebuild), reading.py (count, connections,
sessions, replay, rejected), usage.py (usage), reconciling.py (reconcile) and documents.py (the
documents checked in under docs/: asyncapi, openapi, settings-doc)."""

from __future__ import annotations

import click

from service.cli import documents, reading, reconciling, running, usage, writing
from service.settings_doc import settings_help

__all__ = ["cli", "main"]


@click.group(epilog=settings_help(), context_settings={"max_content_width": 110})
def cli() -> None:
    """Connection Ledger: the authoritative, replayable record of who is connected to which
    realtime session."""


for command in (
    running.serve,
    running.relay,
    running.simulate,
    documents.asyncapi,
    documents.openapi,
    documents.settings_doc,
    writing.migrate,
    writing.import_,
    reading.count,
    reading.connections,
    usage.usage,
    reading.sessions,
    reading.replay,
    writing.rebuild,
    reading.rejected,
    reconciling.reconcile,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="connledger")
