"""Commands that run until stopped: serve, relay, simulate."""

from __future__ import annotations

import click

from service.cli.common import SettingError, run_process
from service.cli.loop import run
from service.errors import ConfigurationError
from service.settings import load_settings

__all__ = ["relay", "serve", "simulate"]


@click.command()
def serve() -> None:
    """Run the service: NATS ingest, the ledger relay, and queries.

    With no LEDGER_NATS_URL it starts the bundled nats-server (JetStream under the var folder);
    with no LEDGER_DATABASE_URL it keeps the ledger in SQLite under the var folder."""
    from service.app.serve import serve

    run_process(serve)


@click.command()
@click.option("--watch-stdin", is_flag=True, hidden=True, help="Stop when standard input closes.")
def relay(watch_stdin: bool) -> None:
    """Run only the relay: every ledger record to the LEDGER stream, in position order.

    serve runs one itself (LEDGER_RELAY_MODE); run this beside instances that have
    LEDGER_RELAY_MODE=off. Needs LEDGER_NATS_URL."""
    from service.app.relay_command import run_relay

    run_process(lambda settings: run_relay(settings, watch_stdin=watch_stdin))


@click.command()
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
@click.option(
    "--platform",
    type=click.Choice(["livekit", "twilio", "agora", "vonage"]),
    default=None,
    help="Send this platform's signed webhooks over HTTP instead of native events over NATS "
    "(signed with the LEDGER_* secrets the service has).",
)
@click.option(
    "--url",
    "http_url",
    default=None,
    help="The service's HTTP base URL for --platform (default: LEDGER_HTTP_HOST and LEDGER_HTTP_PORT).",
)
def simulate(
    rate: float,
    sessions: int,
    duration: float | None,
    seed: int | None,
    nats_url: str | None,
    platform: str | None,
    http_url: str | None,
) -> None:
    """Send realistic connection traffic to a running service, to watch the dashboard move."""
    import time

    from service.redact import mask_nats_urls
    from service.simulation.run import http_url_for_simulation, nats_url_for_simulation, simulate_webhooks
    from service.simulation.run import simulate as run_simulation

    settings = load_settings()
    chosen_seed = seed if seed is not None else int(time.time())

    def report(sent: int, elapsed: float) -> None:
        click.echo(f"\r{sent} events in {elapsed:.0f} s", nl=False, err=True)

    if platform is not None:
        url = http_url or http_url_for_simulation(settings)
        what = f"{platform} webhooks"
        traffic = simulate_webhooks(settings, url, platform, rate, sessions, duration, chosen_seed, report)
    else:
        url = nats_url or nats_url_for_simulation(settings)
        what = "events"
        traffic = run_simulation(settings, url, rate, sessions, duration, chosen_seed, report)
    click.echo(
        f"sending about {rate:g} {what}/s over {sessions} sessions to {mask_nats_urls(url)}; Ctrl-C stops",
        err=True,
    )
    try:
        sent = run(traffic)
    except KeyboardInterrupt:
        click.echo("\nstopped", err=True)
        return
    except ConfigurationError as error:
        raise SettingError(str(error)) from None
    click.echo(f"\nsent {sent} {what}", err=True)
