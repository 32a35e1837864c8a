"""The HTTP API (CONTRACT sections 1, 4, 6, 7, 8). An edge: it decodes requests, calls the
pipeline's publisher, the queries and the store, and answers. Errors are JSON naming the field:
`{"error": <code>, "message": ..., "field": ...}`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import schemas
from service.commit_signal import CommitSignal
from service.errors import ErrorCode, TransientError
from service.events import MAX_POSITION, is_session_id
from service.http.answers import error as _error
from service.http.answers import json as _json
from service.http.answers import unavailable
from service.http.fast_count import CountFastPath
from service.http.guard import Guard, RequestBodies
from service.http.intake import HttpRejection, events_from_body, vonage_from_body
from service.http.sse import session_stream
from service.http.streaming import streamed
from service.ledger.records import rejected_to_dict
from service.pipeline.ledger_service import LedgerService
from service.pipeline.live_counts import LiveCounts
from service.streaming_readers import RETRY_AFTER_SECONDS
from service.subjects import event_subject

__all__ = ["HttpContext", "create_app"]

STATIC = Path(__file__).parent / "static"
NDJSON = "application/x-ndjson"


class Forwarder(Protocol):
    """Where accepted events go: the CONNECTIONS stream (the composition root hands in the NATS
    edge's publisher). `publish` returns once every message is stored, and raises
    TransientError otherwise."""

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None: ...


@dataclass(slots=True)
class HttpContext:
    ledger: LedgerService
    committed: CommitSignal
    counts: LiveCounts
    publisher: Forwarder | None
    ready: Callable[[], Awaitable[dict[str, bool]]]
    # The AsyncAPI document of the NATS interface, from the composition root (the NATS edge
    # generates it; this edge does not import that one). None: not served here.
    asyncapi: Callable[[], dict[str, Any]] | None = None


# Query parameters that name positions and counts of records: beyond a 64-bit integer, no
# database can compare them, and the answer is a 422 naming the parameter.
Position = Annotated[int, Query(ge=0, le=MAX_POSITION)]
OptionalPosition = Annotated[int | None, Query(ge=0, le=MAX_POSITION)]
Limit = Annotated[int | None, Query(ge=1, le=MAX_POSITION)]

# The most sessions `GET /v1/sessions` answers in one page.
MAX_SESSIONS_PAGE = 1000


def _session(session_id: str) -> None:
    if not is_session_id(session_id):
        raise HttpRejection(
            422,
            "invalid_field",
            "sessionId must be 1 to 256 characters of A-Z a-z 0-9 - _ ~ = :",
            "sessionId",
        )


def create_app(context: HttpContext) -> FastAPI:
    ledger = context.ledger
    settings = ledger.settings
    readers = ledger.streaming
    stall = settings.stream_stall_timeout
    bodies = RequestBodies(settings.http_body_budget, settings.http_body_timeout)
    app = FastAPI(
        title="Connection Ledger",
        version="1",
        description="The authoritative, replayable record of who is connected to which realtime session.",
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

    @app.exception_handler(TransientError)
    async def _unavailable(_: Request, error: TransientError) -> Response:
        return unavailable(ErrorCode.UNAVAILABLE, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> Response:
        return _error(error.status_code, ErrorCode.HTTP_ERROR, str(error.detail), None)

    # Added first, so it runs inside the Guard: tokens are checked before any answer.
    app.add_middleware(CountFastPath, counts=context.counts, settings=settings)
    app.add_middleware(Guard, settings=settings)

    async def _publish(events: list[tuple[Any, bytes]]) -> Response:
        if context.publisher is None:
            return _error(503, ErrorCode.UNAVAILABLE, "this instance does not take writes (no NATS)", None)
        prefix = settings.subject_prefix
        await context.publisher.publish(
            [(event_subject(prefix, event.session_id, event.type.value), raw) for event, raw in events]
        )
        return _json({"accepted": len(events)}, 202)

    @app.post(
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

    @app.post(
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

    async def _wait(min_position: int | None) -> None:
        # The database is always at least as far as the in-memory counts: once they reflect
        # the position, so does any read that follows.
        if min_position:
            await context.counts.wait_for(min_position, settings.min_position_wait)

    @app.get("/v1/sessions/{session_id}", tags=["queries"], summary="A session's live connections")
    async def get_session(session_id: str, minPosition: OptionalPosition = None) -> Response:  # noqa: N803
        _session(session_id)
        await _wait(minPosition)
        return _json(await ledger.queries.connections(session_id))

    @app.get("/v1/sessions/{session_id}/count", tags=["queries"], summary="A session's connection count")
    async def get_count(session_id: str, minPosition: OptionalPosition = None) -> Response:  # noqa: N803
        _session(session_id)
        return _json(await context.counts.count(session_id, minPosition, settings.min_position_wait))

    @app.get("/v1/sessions", tags=["queries"], summary="Sessions with their counts, paged")
    async def get_sessions(
        active: bool = True,
        limit: int = Query(
            100, ge=1, description=f"Sessions per page; a larger limit gets {MAX_SESSIONS_PAGE}"
        ),
        cursor: str | None = None,
        minPosition: OptionalPosition = None,  # noqa: N803
    ) -> Response:
        await _wait(minPosition)
        try:
            # A larger page is cut, not refused: the client follows `next` in any case.
            page = await ledger.queries.sessions(
                active=active, limit=min(limit, MAX_SESSIONS_PAGE), cursor=cursor
            )
        except (ValueError, UnicodeDecodeError):
            raise HttpRejection(
                422, "invalid_field", "cursor is not one this service issued", "cursor"
            ) from None
        return _json({"sessions": page.sessions, "next": page.next})

    @app.get("/v1/events", tags=["replay"], summary="Ledger records in position order, NDJSON")
    async def get_events(
        sessionId: str | None = None,  # noqa: N803
        after: Position = 0,
        limit: Limit = None,
    ) -> Response:
        if sessionId is not None:
            _session(sessionId)

        async def lines() -> AsyncGenerator[bytes, None]:
            # Encoded by the database, several ranges at once: the same lines as record_json
            # gives (the contract tests compare them), at the speed of `connledger replay`.
            async with aclosing(
                ledger.store.record_lines(after=after, session_id=sessionId, limit=limit)
            ) as chunks:
                async for chunk in chunks:
                    yield chunk

        return await streamed(readers, stall, "/v1/events", lines, NDJSON)

    @app.get("/v1/rejected", tags=["replay"], summary="Rejected messages in id order, NDJSON")
    async def get_rejected(after: Position = 0, limit: Limit = None) -> Response:
        async def lines() -> AsyncGenerator[bytes, None]:
            async with aclosing(ledger.store.rejected(after=after, limit=limit)) as pages:
                async for rows in pages:
                    yield b"".join(orjson.dumps(rejected_to_dict(row)) + b"\n" for row in rows)

        return await streamed(readers, stall, "/v1/rejected", lines, NDJSON)

    @app.get(
        "/v1/sessions/{session_id}/stream",
        tags=["replay"],
        summary="Server-Sent Events: a snapshot, then every record as it is appended",
    )
    async def get_stream(session_id: str, request: Request) -> Response:
        _session(session_id)
        last = request.headers.get("last-event-id")
        if last is not None and not (
            last.isascii() and last.isdigit() and len(last) <= 19 and int(last) <= MAX_POSITION
        ):
            raise HttpRejection(
                422, "invalid_field", "Last-Event-ID must be a ledger position", "Last-Event-ID"
            )

        def stream() -> AsyncGenerator[bytes, None]:
            return session_stream(
                session_id,
                ledger.queries,
                ledger.store,
                context.committed,
                int(last) if last is not None else None,
            )

        # The first chunk of a stream resumed at the head comes only with the next record.
        return await streamed(
            readers,
            stall,
            "/v1/sessions/{id}/stream",
            stream,
            "text/event-stream",
            {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            first_now=last is None,
        )

    @app.get("/healthz", tags=["operations"], summary="Alive")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", tags=["operations"], summary="NATS and database reachable, consumer running")
    async def readyz() -> Response:
        checks = await context.ready()
        return _json({"ready": all(checks.values()), "checks": checks}, 200 if all(checks.values()) else 503)

    @app.get("/docs/asyncapi", tags=["operations"], summary="The AsyncAPI 3.0 document of the NATS interface")
    async def asyncapi() -> Response:
        if context.asyncapi is None:
            raise HttpRejection(404, ErrorCode.NOT_FOUND, "no NATS interface is served here", None)
        return _json(context.asyncapi())

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(ledger.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(STATIC / "index.html")

    @app.get("/sessions/{session_id}", include_in_schema=False)
    async def session_page(session_id: str) -> Response:
        return FileResponse(STATIC / "session.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = STATIC / name
        if "/" in name or not path.is_file():
            return _error(404, ErrorCode.NOT_FOUND, f"no static file {name!r}", None)
        return FileResponse(path)

    return app
