"""The HTTP API (CONTRACT sections 1, 4, 6, 7, 8). An edge: it decodes requests, calls the
pipeline's publisher, the queries and the store, and answers. Errors are JSON naming the field:
`{"error": <code>, "message": ..., "field": ...}`.

The routes are in `service/http/routes/`, one module per concern; this module builds the
application, answers errors in the contract's shape, and includes the routes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ErrorCode, InvalidQuery, RejectCode, TransientError
from service.http.answers import error as _error
from service.http.answers import json as _json
from service.http.answers import unavailable
from service.http.context import Forwarder, HttpContext
from service.http.fast_count import CountFastPath
from service.http.guard import Guard
from service.http.intake import HttpRejection
from service.http.routes import dashboard, events_in, operations, queries, replay, sse
from service.streaming_readers import RETRY_AFTER_SECONDS

__all__ = ["Forwarder", "HttpContext", "create_app"]

TITLE = "Connection Ledger"
DESCRIPTION = "The authoritative, replayable record of who is connected to which realtime session."


def create_app(context: HttpContext) -> FastAPI:
    settings = context.ledger.settings
    app = FastAPI(
        title=TITLE,
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )

    @app.exception_handler(HttpRejection)
    async def _rejected(_: Request, error: HttpRejection) -> Response:
        answer = _json(error.body(), error.status)
        if error.status == 503:
            answer.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return answer

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0]
        field = str(first["loc"][-1]) if first.get("loc") else None
        return _error(422, "invalid_field", f"{field}: {first['msg']}", field)

    @app.exception_handler(InvalidQuery)
    async def _invalid_query(_: Request, error: InvalidQuery) -> Response:
        return _error(422, RejectCode.INVALID_FIELD, error.message, error.field)

    @app.exception_handler(TransientError)
    async def _unavailable(_: Request, error: TransientError) -> Response:
        return unavailable(ErrorCode.UNAVAILABLE, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> Response:
        return _error(error.status_code, ErrorCode.HTTP_ERROR, str(error.detail), None)

    # Added first, so it runs inside the Guard: tokens are checked before any answer.
    app.add_middleware(CountFastPath, counts=context.counts, settings=settings)
    app.add_middleware(Guard, settings=settings)

    # In this order, the order of the OpenAPI document's paths.
    for routes in (events_in, queries, replay, sse, operations, dashboard):
        app.include_router(routes.router(context))
    return app
