"""Connecting to NATS with the configured authentication and TLS."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from service.errors import ConfigurationError
from service.redact import mask_nats_urls, mask_secrets
from service.settings import Settings

__all__ = ["connect"]

log = logging.getLogger(__name__)


async def _on_error(error: Exception) -> None:
    # One line, not nats-py's default traceback: these are connection events, not bugs. (An
    # error may quote a server's URL, password and all: masked.)
    log.warning("nats: %s: %s", type(error).__name__, mask_secrets(str(error)))


async def _on_disconnected() -> None:
    log.info("nats: disconnected")


async def _on_reconnected() -> None:
    log.info("nats: reconnected")


def _tls_context(settings: Settings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
        )
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(
            f"LEDGER_NATS_TLS_CA: cannot read {settings.nats_tls_ca} as PEM certificates ({error})"
        ) from None
    if settings.nats_tls_cert is not None:
        key = str(settings.nats_tls_key) if settings.nats_tls_key else None
        try:
            context.load_cert_chain(str(settings.nats_tls_cert), key)
        except (OSError, ssl.SSLError) as error:
            raise ConfigurationError(
                f"LEDGER_NATS_TLS_CERT / LEDGER_NATS_TLS_KEY: cannot load {settings.nats_tls_cert} "
                f"with its key{f' {key}' if key else ''} ({error}); give a PEM certificate and its "
                "private key (or one file holding both)"
            ) from None
    return context


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
        options["tls"] = _tls_context(settings)
    # nats-py retries a failing first connect forever, so a wrong URL or credential would hang
    # silently: probe first with reconnects off. (Its server pool drops a server only after
    # more than max_reconnect_attempts failures, and never when that is 0 or less: 1 means
    # two tries, the second after reconnect_time_wait.)
    quiet = {k: v for k, v in options.items() if not k.endswith("_cb")}
    failures: list[Exception] = []

    async def remember(error: Exception) -> None:
        failures.append(error)

    try:
        probe = await nats.connect(
            **{**quiet, "max_reconnect_attempts": 1}, allow_reconnect=False, error_cb=remember
        )
        await probe.close()
        return await nats.connect(**options)
    except (OSError, nats.errors.Error) as error:
        # "No servers available" says less than why the last try failed.
        cause = failures[-1] if failures else error
        raise ConfigurationError(
            f"LEDGER_NATS_URL: cannot connect to {mask_nats_urls(url)} ({type(cause).__name__}: "
            f"{mask_secrets(str(cause))}); check the URL and LEDGER_NATS_USER/PASSWORD/TOKEN/CREDS/"
            "TLS_* settings"
        ) from error
