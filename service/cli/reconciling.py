"""`connledger reconcile`: the ledger's live connections against a platform's own list, once."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import click

from service.app.platform_lists import lister_for
from service.cli.common import json_option, run_with_ledger, session_id
from service.cli.output import Output
from service.errors import ConfigurationError
from service.pipeline.ledger_service import LedgerService
from service.pipeline.reconcile import Reconciler

__all__ = ["reconcile"]


@click.command()
@click.option(
    "--platform", type=click.Choice(["vonage", "livekit"]), required=True, help="Whose list to ask."
)
@click.option(
    "--session",
    "session",
    callback=session_id,
    help="Only this session (default: every active session of the platform, and native ones).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0, 3600),
    default=5.0,
    show_default=True,
    help="Seconds between the two looks the command takes.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, 10_000, min_open=True),
    default=None,
    help="Requests a second to the platform at most [default: LEDGER_RECONCILE_RATE, 10].",
)
@json_option
def reconcile(platform: str, session: str | None, interval: float, rate: float | None, as_json: bool) -> None:
    """Ask the platform twice, INTERVAL seconds apart, for each session's live connections, and
    append what two consecutive looks agree on: a destroy for a connection live in the ledger
    and absent from both lists, a create for one listed by both that the ledger never saw (both
    of origin reconcile, through the hooks). A session whose look failed is left as it is.
    Requests go at most RATE a second (LEDGER_RECONCILE_RATE unless given)."""
    out = Output(as_json)

    async def work(ledger: LedgerService) -> dict[str, Any]:
        reconciler = Reconciler(
            ledger.store,
            ledger.pipeline,
            lister_for(ledger.settings, platform),
            ledger.metrics,
            rate=ledger.settings.reconcile_rate if rate is None else rate,
        )
        if not await reconciler.lease.try_acquire():
            raise ConfigurationError(
                f"another instance is reconciling with {platform} now (it holds the lease); "
                "try again later, or let LEDGER_RECONCILE_INTERVAL do it"
            )
        sessions = None if session is None else [session]
        try:
            await reconciler.reconcile(sessions)
            await asyncio.sleep(interval)
            report = await reconciler.reconcile(sessions)
        finally:
            await reconciler.lease.release()
        return {"platform": platform, **asdict(report)}

    report = run_with_ledger(work)
    failures = report.pop("failures")
    out.document(report, title=f"reconciled with {platform}")
    for failure in failures:
        click.echo(f"no list: {failure}", err=True)
    if report["errors"] > len(failures):
        click.echo(f"no list: {report['errors'] - len(failures)} more sessions", err=True)
