"""`connledger serve`: the running service. Starts the bundled nats-server when no NATS URL is
configured, migrates the database, then runs ingest, the relay and the responders until
SIGTERM or SIGINT, and drains: the batch in hand is committed and acknowledged before exit."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from service.app.bootstrap import follow_counts, open_ledger
from service.app.platform_lists import lister_for
from service.app.process_tuning import settle_for_serving
from service.app.relay_child import RelayProcess
from service.app.sampled_gauges import sample_forever
from service.commit_signal import CommitSignal
from service.errors import ConfigurationError
from service.http.app import create_app
from service.http.context import HttpContext
from service.http.server import HttpServer
from service.nats.application import NatsEdge
from service.nats.embedded import EmbeddedNats
from service.nats.ingest import Ingestor
from service.nats.intake_publisher import EventPublisher
from service.nats.relay import Relay
from service.nats.responders import Responders
from service.nats.streams import streams_problem
from service.pipeline.expiry import Expirer
from service.pipeline.reconcile import Reconciler
from service.redact import mask_nats_urls, mask_url
from service.settings import Settings

__all__ = ["serve"]

log = logging.getLogger(__name__)
DRAIN_SECONDS = 30.0
RELAY_START_SECONDS = 30.0


def _say(line: str) -> None:
    print(line, flush=True)  # the URLs a user needs, on stdout


async def serve(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # Built first: a platform's key that cannot be read stops serve before it starts anything.
    listers = []
    if settings.reconcile_interval is not None:
        listers = [lister_for(settings, platform) for platform in settings.reconcile_platforms]

    embedded: EmbeddedNats | None = None
    url = settings.nats_url
    if not url:
        embedded = EmbeddedNats(settings.var_dir, settings.nats_port)
        url = await embedded.start()
    try:
        async with open_ledger(settings) as ledger, follow_counts(ledger) as counts:
            # The NATS side is a FastStream application (service/nats/application.py): the
            # queries broker serves the responders; the stream broker's connection carries
            # ingest, the relay and the notices.
            edge = NatsEdge(settings, url)
            edge.answer_with(
                Responders(edge.queries, ledger.queries, ledger.store, settings, counts, ledger.streaming)
            )
            # Connects both, makes sure of the streams, subscribes, flushes: ready to say "ready".
            try:
                await edge.start(on_head=counts.notice)
            except BaseException:
                await edge.stop()
                raise
            nc = edge.stream.connection
            committed = CommitSignal()
            ingestor = Ingestor(nc, ledger.pipeline, settings, committed)
            # The relay inline shares this process's CPU with ingest; as a child process it runs
            # on another core (relay_child.py).
            # A record the stream refuses for good stops the relay; the gauge says which.
            refused = ledger.metrics.relay_refused
            lease_held = ledger.metrics.relay_lease_held
            relay: Relay | None = None
            relay_process: RelayProcess | None = None
            if settings.relay_mode == "inline":
                relay = Relay(
                    nc, ledger.store, settings, committed, lambda at, _: refused.set(at), lease_held.set
                )
            elif settings.relay_mode == "process":
                relay_process = RelayProcess(url, on_refused=refused.set, on_lease=lease_held.set)
            # Off unless LEDGER_MAX_CONNECTION_AGE is set; one instance at a time expires,
            # under the expiry lease (pipeline/expiry.py).
            expirer: Expirer | None = None
            if settings.max_connection_age is not None:
                expirer = Expirer(ledger.store, ledger.pipeline, settings.max_connection_age, ledger.metrics)
            # Off unless LEDGER_RECONCILE_INTERVAL is set: a reconciler per platform configured,
            # each under its platform's lease (pipeline/reconcile.py).
            reconcilers = [
                Reconciler(
                    ledger.store, ledger.pipeline, lister, ledger.metrics, rate=settings.reconcile_rate
                )
                for lister in listers
            ]
            ingest_task = asyncio.create_task(ingestor.run(), name="ingest")

            async def ready() -> dict[str, str | None]:
                """Each check's reason for not being ready, or None when it passes."""
                try:
                    await ledger.queries.head()
                    database = None
                except Exception as error:
                    database = f"the database does not answer ({type(error).__name__})"
                connected = nc.is_connected
                return {
                    "nats": None if connected else "not connected to NATS (reconnecting)",
                    "database": database,
                    "consumer": None if not ingest_task.done() else "ingest has stopped",
                    "streams": await streams_problem(nc, settings) if connected else None,
                }

            context = HttpContext(ledger, committed, counts, EventPublisher(nc), ready, edge.document)
            http = HttpServer(create_app(context), settings)
            tasks = {
                ingest_task,
                asyncio.create_task(http.run(), name="http"),
                asyncio.create_task(sample_forever(nc, ledger, relay, ingestor.stopping), name="sampler"),
            }
            if relay is not None:
                tasks.add(asyncio.create_task(relay.run(), name="relay"))
            if relay_process is not None:
                tasks.add(asyncio.create_task(relay_process.run(), name="relay process"))
            if expirer is not None:
                tasks.add(asyncio.create_task(expirer.run(), name="expiry"))
            for reconciler in reconcilers:
                assert settings.reconcile_interval is not None
                run = reconciler.run(settings.reconcile_interval)
                tasks.add(asyncio.create_task(run, name=f"reconcile {reconciler.lister.platform}"))
            if relay_process is not None:
                try:
                    await asyncio.wait_for(relay_process.started.wait(), RELAY_START_SECONDS)
                except TimeoutError:
                    log.warning("the relay process is not up after %.0f s; going on", RELAY_START_SECONDS)
            await http.started.wait()
            if not http.url:
                await asyncio.wait(tasks, timeout=1)
                for task in tasks:
                    task.cancel()
                raise ConfigurationError(
                    f"LEDGER_HTTP_PORT: cannot listen on {settings.http_host}:{settings.http_port} "
                    "(in use?); set LEDGER_HTTP_PORT to a free port"
                )
            settle_for_serving()
            if embedded is not None:
                embedded.announce()
            _say(
                f"NATS      {mask_nats_urls(url)}"
                + (f"  (bundled nats-server, JetStream under {settings.var_dir}/nats)" if embedded else "")
            )
            # Masked from the URL as written: SQLAlchemy's own masking shows what follows an
            # unencoded "@" in a password.
            _say(f"database  {mask_url(settings.resolved_database_url)}")
            _say(f"HTTP      {http.url}  (dashboard {http.url}/, API docs {http.url}/docs)")
            _say("ready: publish to connections.<sessionId>.<type>; ask ledger.sessions.<sessionId>.count")

            stopper = asyncio.create_task(stop.wait())
            watched: set[asyncio.Task[Any]] = {*tasks, stopper}
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t is not stopper and t.exception() is not None]
            for task in failed:
                log.error("%s failed", task.get_name(), exc_info=task.exception())

            # Drain: stop fetching; the batch in hand finishes (commit, then ack).
            ingestor.stop()
            if relay is not None:
                relay.stop()
            if relay_process is not None:
                relay_process.stop()
            if expirer is not None:
                expirer.stop()
            for reconciler in reconcilers:
                reconciler.stop()
            http.stop()
            stopper.cancel()
            _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            # Requests in hand are answered; the acks, already queued, are flushed out; both
            # connections close. (The server may have been stopped along with us: then there
            # is nothing left to flush.)
            await edge.stop()
            return 1 if failed else 0
    finally:
        if embedded is not None:
            await embedded.stop()
