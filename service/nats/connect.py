"""Connecting to NATS with the configured authentication and TLS."""

from __future__ import annotations

import ssl
from typing import Any

import nats
from nats.aio.client import Client

from service.settings import Settings

__all__ = ["connect"]


async def connect(settings: Settings, url: str, name: str = "connection-ledger") -> Client:
    options: dict[str, Any] = {
        "servers": [u.strip() for u in url.split(",") if u.strip()],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
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
    return await nats.connect(**options)
