"""The platforms' lists of live connections over HTTP, for reconciliation: the requests and
answers of service/platforms/live_lists.py, made with the standard library's urllib on a worker
thread (one request at a time, a few a second: no HTTP client library is worth a runtime
dependency for that).

Every failure is a PlatformError, which reconciliation takes as "no list": an HTTP error status
(with a Retry-After when the platform gave one), no answer in time, a redirect (not followed: it
would carry the token elsewhere), an answer past MAX_ANSWER_BYTES."""

from __future__ import annotations

import asyncio
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Final

from service.errors import ConfigurationError
from service.events import Source
from service.platforms import jwt_rs256
from service.platforms.live_lists import (
    Listed,
    PlatformError,
    Request,
    livekit_answer,
    livekit_request,
    vonage_answer,
    vonage_request,
)
from service.settings import Settings

__all__ = ["HttpLister", "lister_for"]

TIMEOUT_SECONDS: Final = 10.0
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER: Final = urllib.request.build_opener(_NoRedirects)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HttpLister:
    def __init__(
        self,
        platform: str,
        sources: tuple[str, ...],
        build: Callable[[str, int], Request],
        read: Callable[[bytes], dict[str, Listed]],
    ) -> None:
        self.platform = platform
        self.sources = sources
        self.build = build
        self.read = read

    async def live(self, session_id: str) -> dict[str, Listed]:
        try:
            request = self.build(session_id, int(time.time()))
        except ValueError as error:  # a session id no room name escapes to
            raise PlatformError(f"{self.platform} has no session {session_id!r}: {error}") from None
        return self.read(await asyncio.to_thread(self._fetch, request))

    def _fetch(self, request: Request) -> bytes:
        name = self.platform
        try:
            call = urllib.request.Request(request.url, request.body, request.headers, method=request.method)
            with _OPENER.open(call, timeout=TIMEOUT_SECONDS) as answer:
                raw: bytes = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            status = error.code
            with error:
                detail = error.read(512).decode("utf-8", "replace").strip()
            raise PlatformError(
                f"{name} answered {status}" + (f": {detail}" if detail else ""),
                status,
                retry_after(error.headers.get("Retry-After")),
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            # No answer, a connection cut mid-answer, or a base URL urllib cannot use.
            raise PlatformError(f"{name} did not answer: {error!r}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise PlatformError(f"{name}'s answer is longer than {MAX_ANSWER_BYTES} bytes")
        return raw


def lister_for(settings: Settings, platform: str) -> HttpLister:
    """The list of `platform` as the settings configure it; ConfigurationError naming what is
    missing."""
    if platform == "vonage":
        if not settings.vonage_application_id or settings.vonage_private_key is None:
            raise ConfigurationError(
                "LEDGER_VONAGE_APPLICATION_ID and LEDGER_VONAGE_PRIVATE_KEY are required to reconcile "
                "with Vonage"
            )
        path = settings.vonage_private_key
        try:
            key = jwt_rs256.load_private_key(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ConfigurationError(
                f"LEDGER_VONAGE_PRIVATE_KEY: {path} holds no RSA private key in PEM ({error})"
            ) from None
        base, application = settings.vonage_api_url, settings.vonage_application_id
        return HttpLister(
            "vonage",
            (Source.VONAGE.value, Source.NATIVE.value),
            lambda session_id, now: vonage_request(base, application, key, session_id, now),
            vonage_answer,
        )
    if platform == "livekit":
        if not (settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret):
            raise ConfigurationError(
                "LEDGER_LIVEKIT_URL, LEDGER_LIVEKIT_API_KEY and LEDGER_LIVEKIT_API_SECRET are required "
                "to reconcile with LiveKit"
            )
        url, api_key, secret = settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret
        return HttpLister(
            "livekit",
            (Source.LIVEKIT.value, Source.NATIVE.value),
            lambda session_id, now: livekit_request(url, api_key, secret, session_id, now),
            livekit_answer,
        )
    raise ConfigurationError(f"no reconciliation with {platform!r}: use vonage or livekit")
