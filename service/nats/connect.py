"""Connecting to NATS with the configured authentication and TLS: a nats-py client (`connect`,
for the relay's own process and the tools), or the options of the service's FastStream brokers
(`broker_security`, `CALLBACKS`) after a `probe` that says plainly why a first connect fails."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import nats
import nats.errors
from faststream.nats import NatsSecurity
from faststream.nats.security import NatsCredentials, NatsToken, NatsUserPassword
from nats.aio.client import Client

from service.errors import ConfigurationError
from service.redact import mask_nats_urls, mask_secrets
from service.settings import Settings

__all__ = ["CALLBACKS", "broker_security", "connect", "probe", "servers"]

log = logging.getLogger(__name__)


async def _on_error(error: Exception) -> None:
    # One line, not nats-py's default traceback: these are connection events, not bugs. (An
    # error may quote a server's URL, password and all: masked.)
    log.warning("nats: %s: %s", type(error).__name__, mask_secrets(str(error)))


async def _on_disconnected() -> None:
    log.info("nats: disconnected")


async def _on_reconnected() -> None:
    log.info("nats: reconnected")


# Our one-line connection events, for nats-py's callbacks (a FastStream broker's included).
CALLBACKS: dict[str, Any] = {
    "error_cb": _on_error,
    "disconnected_cb": _on_disconnected,
    "reconnected_cb": _on_reconnected,
}


def servers(url: str) -> list[str]:
    return [u.strip() for u in url.split(",") if u.strip()]


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


def _options(settings: Settings, url: str, name: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "servers": servers(url),
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        **CALLBACKS,
    }
    if settings.nats_user:
        options["user"], options["password"] = settings.nats_user, settings.nats_password
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    if settings.nats_tls_ca is not None or settings.nats_tls_cert is not None:
        options["tls"] = _tls_context(settings)
    return options


def broker_security(settings: Settings) -> NatsSecurity | None:
    """The settings' authentication and TLS as a FastStream broker takes them. A broker takes one
    way to authenticate; a server asks for one, so when several are set the most specific
    wins: a credentials file, then a token, then a user and password."""
    tls = (
        _tls_context(settings)
        if settings.nats_tls_ca is not None or settings.nats_tls_cert is not None
        else None
    )
    if settings.nats_creds is not None:
        return NatsCredentials(str(settings.nats_creds), ssl_context=tls)
    if settings.nats_token:
        return NatsToken(settings.nats_token, ssl_context=tls)
    if settings.nats_user:
        return NatsUserPassword(settings.nats_user, settings.nats_password, ssl_context=tls)
    return NatsSecurity(ssl_context=tls) if tls is not None else None


async def probe(settings: Settings, url: str) -> None:
    """Connect once and close, or raise ConfigurationError saying why not (secrets masked).

    nats-py retries a failing first connect forever, so a wrong URL or credential would hang
    silently: this probes with reconnects off. (Its server pool drops a server only after
    more than max_reconnect_attempts failures, and never when that is 0 or less: 1 means
    two tries, the second after reconnect_time_wait.)"""
    options = _options(settings, url, "connection-ledger-probe")
    quiet = {k: v for k, v in options.items() if not k.endswith("_cb")}
    failures: list[Exception] = []

    async def remember(error: Exception) -> None:
        failures.append(error)

    try:
        client = await nats.connect(
            **{**quiet, "max_reconnect_attempts": 1}, allow_reconnect=False, error_cb=remember
        )
        await client.close()
    except (OSError, nats.errors.Error) as error:
        # "No servers available" says less than why the last try failed.
        cause = failures[-1] if failures else error
        raise ConfigurationError(
            f"LEDGER_NATS_URL: cannot connect to {mask_nats_urls(url)} ({type(cause).__name__}: "
            f"{mask_secrets(str(cause))}); check the URL and LEDGER_NATS_USER/PASSWORD/TOKEN/CREDS/"
            "TLS_* settings"
        ) from error


async def connect(settings: Settings, url: str, name: str = "connection-ledger") -> Client:
    """A nats-py client, after a `probe`."""
    await probe(settings, url)
    try:
        return await nats.connect(**_options(settings, url, name))
    except (OSError, nats.errors.Error) as error:
        raise ConfigurationError(
            f"LEDGER_NATS_URL: cannot connect to {mask_nats_urls(url)} ({type(error).__name__}: "
            f"{mask_secrets(str(error))})"
        ) from error
