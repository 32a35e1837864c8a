"""`connledger simulate`: realistic traffic against a running service, at a chosen rate, so
that a newcomer can watch the dashboard move. Sessions fill and empty, connections drop off the
network or are forced out, recorders join, producers retry (duplicates) and leaves overtake
joins (out of order): see traffic.py beside it. With `--platform`, a platform's signed webhooks
go to the service's HTTP instead (webhook_traffic.py)."""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar
from urllib.parse import urlsplit

import orjson

from service.errors import ConfigurationError
from service.nats.connect import connect
from service.settings import Settings
from service.simulation.traffic import generate
from service.simulation.webhook_traffic import WebhookRequest, webhook_requests

T = TypeVar("T")

__all__ = ["http_url_for_simulation", "nats_url_for_simulation", "simulate", "simulate_webhooks"]


def nats_url_for_simulation(settings: Settings) -> str:
    """LEDGER_NATS_URL, else the bundled server a local `connledger serve` wrote down."""
    if settings.nats_url:
        return settings.nats_url
    written = settings.var_dir / "nats.url"
    if written.exists():
        return written.read_text().strip()
    return "nats://127.0.0.1:4222"


def http_url_for_simulation(settings: Settings) -> str:
    """The service's own HTTP address, from LEDGER_HTTP_HOST and LEDGER_HTTP_PORT."""
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.http_port}"


async def _paced(
    items: Iterable[T],
    rate: float,
    duration: float | None,
    report: Callable[[int, float], None],
    send: Callable[[T], Awaitable[None]],
) -> int:
    """Send `items` at `rate` a second for `duration` seconds (or until they end); how many."""
    sent = 0
    started = time.monotonic()
    for item in items:
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            break
        # Pace: never run ahead of `rate`, whatever the batches cost.
        ahead = sent / rate - elapsed
        if ahead > 0:
            await asyncio.sleep(ahead)
        await send(item)
        sent += 1
        if sent % max(1, int(rate)) == 0:
            report(sent, time.monotonic() - started)
    return sent


async def simulate(
    settings: Settings,
    url: str,
    rate: float,
    sessions: int,
    duration: float | None,
    seed: int,
    report: Callable[[int, float], None],
) -> int:
    nc = await connect(settings, url, name="connection-ledger-simulate")
    js = nc.jetstream()

    async def publish(line: bytes) -> None:
        body = orjson.loads(line)
        kind = body.get("type") or body.get("event")
        await js.publish_async(f"{settings.subject_prefix}.{body['sessionId']}.{kind}", line)

    try:
        lines = generate(10**12, seed=seed, sessions=sessions, epoch_ms=time.time_ns() // 1_000_000)
        sent = await _paced(lines, rate, duration, report, publish)
        await js.publish_async_completed()
    finally:
        await nc.close()
    return sent


def _sender(base_url: str) -> Callable[[WebhookRequest], int]:
    """A function that POSTs one request on one kept-alive connection and returns its status."""
    parts = urlsplit(base_url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.netloc, timeout=30)
    prefix = parts.path.rstrip("/")

    def send(request: WebhookRequest) -> int:
        try:
            connection.request("POST", prefix + request.path, body=request.body, headers=request.headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            connection.close()  # reconnects on the next request
            raise
        return response.status

    return send


async def simulate_webhooks(
    settings: Settings,
    base_url: str,
    platform: str,
    rate: float,
    sessions: int,
    duration: float | None,
    seed: int,
    report: Callable[[int, float], None],
) -> int:
    """POST `platform`'s signed webhooks to the service at `base_url`, paced at `rate` a
    second; a refusal (a 4xx or 5xx) stops the run with the service's answer."""
    post = _sender(base_url)

    async def send(request: WebhookRequest) -> None:
        status = await asyncio.to_thread(post, request)
        if status >= 300:
            raise ConfigurationError(
                f"the service answered {status} to a {platform} webhook: is its secret the one set here, "
                "and the route configured?"
            )

    requests = webhook_requests(
        platform, settings, seed=seed, sessions=sessions, epoch_ms=time.time_ns() // 1_000_000, now=time.time
    )
    return await _paced(requests, rate, duration, report, send)
