"""Other platforms' webhooks (CONTRACT section 11): LiveKit, Twilio Video and Agora NCS, each
accepted exactly as the platform sends it. The signature is checked first, on the bytes that
arrived; then the body is translated into a native body (service/platforms/) and published
like any other. A platform whose secret is not configured has no route."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Scope

from service.errors import ErrorCode
from service.events import Event, Ignored
from service.http.answers import error as _error
from service.http.answers import json as _json
from service.http.context import HttpContext
from service.http.guard import RequestBodies
from service.http.intake import translated
from service.platforms import agora, livekit, twilio
from service.platforms.signatures import BadSignature

__all__ = ["include"]

Publish = Callable[[list[tuple[Event, bytes]]], Awaitable[Response]]
# Checks the signature of (headers, raw body) and returns the translation to run after it.
Reader = Callable[[Request, bytes], Callable[[], dict[str, Any] | Ignored]]


def _body(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
_NAMES = {
    "livekit": "LiveKit webhook",
    "twilio": "Twilio Video status callback",
    "agora": "Agora NCS notification",
}


def _path_and_query(scope: Scope) -> str:
    """The request's path and query string as `request.url` gives them (its path escaped the
    same way), read from the ASGI scope: building the whole URL object costs some 15 us a
    request, as much as Twilio's signature itself."""
    path: str = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    query: bytes = scope.get("query_string", b"")
    # Bytes that are not UTF-8 are no URL Twilio signed: the signature then fails, as it should.
    return f"{path}?{query.decode('utf-8', 'replace')}" if query else path


def include(routes: APIRouter, context: HttpContext, bodies: RequestBodies, publish: Publish) -> None:
    """Add the route of each platform whose secret is configured to `routes`."""
    settings = context.ledger.settings
    metrics = context.ledger.metrics

    def handler(platform: str, reader: Reader, status: int) -> Callable[[Request], Awaitable[Response]]:
        async def receive(request: Request) -> Response:
            async with bodies.read(request) as raw:
                try:
                    translate = reader(request, raw)
                except BadSignature as bad:
                    metrics.webhook_signature_failures.labels(platform).inc()
                    return _error(401, ErrorCode.UNAUTHORIZED, bad.message, bad.field)
                decoded = translated(translate)
            if decoded is None:
                # Not published, so ingest never sees it: counted here, by platform.
                metrics.webhook_ignored.labels(platform).inc()
                return _json({"accepted": 0}, status)
            answer = await publish([decoded])
            if answer.status_code == 202 and status != 202:
                answer.status_code = status
            return answer

        return receive

    # (platform, its reader, the 2xx it wants, the media type it sends, the settings it needs),
    # for each platform whose secret is set.
    platforms: list[tuple[str, Reader, int, str, str]] = []
    if settings.livekit_api_secret:
        key, secret = settings.livekit_api_key, settings.livekit_api_secret

        def read_livekit(request: Request, raw: bytes) -> Callable[[], dict[str, Any] | Ignored]:
            livekit.verify(request.headers.get(livekit.SIGNATURE_HEADER), raw, key, secret, time.time())
            return lambda: livekit.to_native(raw)

        platforms.append(
            ("livekit", read_livekit, 202, "application/webhook+json", "LEDGER_LIVEKIT_API_KEY and _SECRET")
        )

    if settings.twilio_auth_token:
        token, base = settings.twilio_auth_token, settings.public_url.rstrip("/")

        def read_twilio(request: Request, raw: bytes) -> Callable[[], dict[str, Any] | Ignored]:
            # Twilio signs the URL it called: the public base URL, this path, any query string.
            url = base + _path_and_query(request.scope)
            params = twilio.form(raw)  # the signature covers the parameters, so they come first
            twilio.verify(request.headers.get(twilio.SIGNATURE_HEADER), url, params, token)
            return lambda: twilio.to_native(raw, params)

        platforms.append(
            ("twilio", read_twilio, 202, "application/x-www-form-urlencoded", "LEDGER_TWILIO_AUTH_TOKEN")
        )

    if settings.agora_ncs_secret:
        ncs_secret = settings.agora_ncs_secret

        def read_agora(request: Request, raw: bytes) -> Callable[[], dict[str, Any] | Ignored]:
            agora.verify(request.headers.get(agora.SIGNATURE_HEADER), raw, ncs_secret)
            return lambda: agora.to_native(raw)

        # Agora's NCS retries a notification unless it is answered 200.
        platforms.append(("agora", read_agora, 200, "application/json", "LEDGER_AGORA_NCS_SECRET"))

    for platform, reader, status, media_type, needs in platforms:
        routes.add_api_route(
            f"/v1/callbacks/{platform}",
            handler(platform, reader, status),
            methods=["POST"],
            status_code=status,
            tags=["webhooks"],
            summary=f"{_NAMES[platform]}, signed (route present when {needs} is set)",
            openapi_extra=_body(media_type, _OBJECT),
        )
