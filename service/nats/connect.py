"""Connecting to NATS with the configured authentication and TLS."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from service.errors import ConfigurationError
from service.settings import Settings

__all__ = ["connect"]

log = logging.getLogger(__name__)


async def _on_error(error: Exception) -> None:
    # One line, not nats-py's default traceback: these are connection events, not bugs.
    log.warning("nats: %s: %s", type(error).__name__, error)


async def _ignore(error: Exception) -> None:
    """The probe's errors are raised to the caller, which reports them once."""


async def _on_disconnected() -> None:
    log.info("nats: disconnected")


async def _on_reconnected() -> None:
    log.info("nats: reconnected")


async def connect(settings: Settings, url: str, name: str = "connection-ledger") -> Client:
    options: dict[str, Any] = {
        "servers": [u.strip() for u in url.split(",") if u.strip()],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "error_cb": _on_error,
        "disconnected_cb": _on_disconnected,
        "reconnected_cb": _on_reconnected,
    }
    if settings.nats_user:
        options["user"], options["password"] = settings.nats_user, settings.nats_password
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    if settings.nats_tls_ca is not None or settings.nats_tls_cert is not None:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
        )
        if settings.nats_tls_cert is not None:
            context.load_cert_chain(
                str(settings.nats_tls_cert), str(settings.nats_tls_key) if settings.nats_tls_key else None
            )
        options["tls"] = context
    try:
        # nats-py retries a failing first connect forever when reconnects are on, so a wrong
        # URL or credential would hang silently: probe once without them, then connect.
        quiet = {k: v for k, v in options.items() if not k.endswith("_cb")}
        probe = await nats.connect(**quiet, allow_reconnect=False, error_cb=_ignore)
        await probe.close()
        return await nats.connect(**options)
    except (OSError, nats.errors.Error) as error:
        raise ConfigurationError(
            f"LEDGER_NATS_URL: cannot connect to {url} ({type(error).__name__}: {error}); check the "
            "URL and LEDGER_NATS_USER/PASSWORD/TOKEN/CREDS/TLS_* settings"
        ) from error
