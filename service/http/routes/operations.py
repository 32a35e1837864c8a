"""Operations: liveness, readiness, Prometheus metrics and the AsyncAPI document of the NATS
interface (handed in by the composition root)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.http.answers import json as _json
from service.http.context import HttpContext

__all__ = ["router"]


def router(context: HttpContext) -> APIRouter:
    routes = APIRouter()

    @routes.get("/healthz", tags=["operations"], summary="Alive")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @routes.get(
        "/readyz",
        tags=["operations"],
        summary="NATS and database reachable, consumer running, streams with a leader",
    )
    async def readyz() -> Response:
        reasons = await context.ready()
        ready = all(reason is None for reason in reasons.values())
        body = {
            "ready": ready,
            "checks": {name: reason is None for name, reason in reasons.items()},
            "reasons": {name: reason for name, reason in reasons.items() if reason is not None},
        }
        return _json(body, 200 if ready else 503)

    @routes.get(
        "/docs/asyncapi", tags=["operations"], summary="The AsyncAPI 3.0 document of the NATS interface"
    )
    async def asyncapi() -> Response:
        return _json(context.asyncapi())

    @routes.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(context.ledger.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return routes
