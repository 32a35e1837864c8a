"""Events in: native events, Vonage callbacks and other platforms' webhooks, forwarded to the
CONNECTIONS stream. A 202 means JetStream stored them; ingest appends them from there."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import schemas
from service.errors import ErrorCode
from service.http.answers import error as _error
from service.http.answers import json as _json
from service.http.context import HttpContext
from service.http.guard import RequestBodies
from service.http.intake import events_from_body, vonage_from_body
from service.http.routes import webhooks
from service.subjects import event_subject

__all__ = ["router"]


def router(context: HttpContext) -> APIRouter:
    routes = APIRouter()
    settings = context.ledger.settings
    # One budget for every body in hand, whichever route reads it.
    bodies = RequestBodies(settings.http_body_budget, settings.http_body_timeout)

    async def _publish(events: list[tuple[Any, bytes]]) -> Response:
        if context.publisher is None:
            return _error(503, ErrorCode.UNAVAILABLE, "this instance does not take writes (no NATS)", None)
        prefix = settings.subject_prefix
        await context.publisher.publish(
            [(event_subject(prefix, event.session_id, event.type.value), raw) for event, raw in events]
        )
        return _json({"accepted": len(events)}, 202)

    @routes.post(
        "/v1/events",
        status_code=202,
        tags=["events"],
        summary="Publish one native event or an array of up to 1000",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                schemas.NATIVE_EVENT,
                                {
                                    "type": "array",
                                    "items": schemas.NATIVE_EVENT,
                                    "minItems": 1,
                                    "maxItems": 1000,
                                },
                            ]
                        }
                    }
                },
            }
        },
    )
    async def post_events(request: Request) -> Response:
        async with bodies.read(request) as raw:
            return await _publish(events_from_body(raw))

    @routes.post(
        "/v1/callbacks/vonage",
        status_code=202,
        tags=["events"],
        summary="Vonage Session Monitoring callback (point the project's callback URL here)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schemas.VONAGE_EVENT}},
            }
        },
    )
    async def post_vonage(request: Request) -> Response:
        async with bodies.read(request) as raw:
            decoded = vonage_from_body(raw)
        if decoded is None:
            # Not published, so ingest never sees it: counted here, as ingest counts its own.
            context.ledger.metrics.ignored.inc()
            return _json({"accepted": 0}, 202)
        return await _publish([decoded])

    webhooks.include(routes, context, bodies, _publish)
    return routes
