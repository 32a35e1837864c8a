"""The HTTP API (CONTRACT sections 1, 4, 6, 7, 8). An edge: it decodes requests, calls the
pipeline's publisher, the queries and the store, and answers. Errors are JSON naming the field:
`{"error": <code>, "message": ..., "field": ...}`."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from service import schemas
from service.asyncapi import asyncapi_document
from service.bootstrap import Ledger
from service.errors import TransientError
from service.events import is_session_id
from service.http.fast_count import CountFastPath
from service.http.intake import MAX_REQUEST_BYTES, HttpRejection, events_from_body, vonage_from_body
from service.http.sse import session_stream
from service.ledger.records import rejected_to_dict
from service.nats.publisher import EventPublisher
from service.notify import CommitSignal
from service.projections.live_counts import LiveCounts
from service.settings import Settings
from service.streaming_readers import RETRY_AFTER_SECONDS, StreamingReaders

__all__ = ["HttpContext", "create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
NDJSON = "application/x-ndjson"


@dataclass(slots=True)
class HttpContext:
    ledger: Ledger
    committed: CommitSignal
    counts: LiveCounts
    publisher: EventPublisher | None
    ready: Callable[[], Awaitable[dict[str, bool]]]


# The most sessions `GET /v1/sessions` answers in one page.
MAX_SESSIONS_PAGE = 1000


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, code: str, message: str, field: str | None) -> Response:
    return _json({"error": code, "message": message, "field": field}, status)


def _session(session_id: str) -> None:
    if not is_session_id(session_id):
        raise HttpRejection(
            422,
            "invalid_field",
            "sessionId must be 1 to 256 characters of A-Z a-z 0-9 - _ ~ = :",
            "sessionId",
        )


def _without_empty_values(query: bytes) -> bytes:
    """The query string less its parameters that have no value: `?limit=&cursor=` is how a
    URL template or an HTML form says "not given", and it means the default, not a bad number."""
    parts = query.split(b"&")
    given = [part for part in parts if part.partition(b"=")[2]]
    return query if len(given) == len(parts) else b"&".join(given)


class Guard:
    """Bearer-token checks, the request size bound and empty query parameters, as plain ASGI
    middleware (a BaseHTTPMiddleware would buffer streaming responses such as SSE through a
    memory stream).

    Writes need LEDGER_HTTP_TOKEN when one is set; reads too with LEDGER_HTTP_TOKEN_FOR_READS.
    Health checks never do."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.token = settings.http_token
        self.for_reads = settings.http_token_for_reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope["query_string"]
        if query and (cleaned := _without_empty_values(query)) != query:
            scope = {**scope, "query_string": cleaned}
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        writes = scope["method"] not in {"GET", "HEAD", "OPTIONS"}
        guarded = self.token and scope["path"] not in {"/healthz", "/readyz"} and (writes or self.for_reads)
        if guarded and not hmac.compare_digest(headers.get("authorization", ""), f"Bearer {self.token}"):
            response = _error(
                401, "unauthorized", "send Authorization: Bearer <LEDGER_HTTP_TOKEN>", "Authorization"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_REQUEST_BYTES:
            await _error(413, "too_large", f"the request is larger than {MAX_REQUEST_BYTES} bytes", None)(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)


class _Stalled(Exception):
    """The client took longer than LEDGER_STREAM_STALL_TIMEOUT to accept a chunk."""


class LimitedStream(StreamingResponse):
    """A streamed answer that holds a place among the streaming readers (given back however
    the stream ends) and drops a client that stops reading.

    A client that does not read makes each send wait for its socket to drain; past the stall
    timeout the stream ends, its place goes to the next reader, and the response is left
    unfinished, so that the client can tell the answer was cut. A database that fails
    mid-stream ends it the same way (a failure before the first byte is a 503)."""

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        readers: StreamingReaders,
        stall_timeout: float,
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._readers = readers
        self._stall_timeout = stall_timeout
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_in_time(message: Any) -> None:
            try:
                await asyncio.wait_for(send(message), self._stall_timeout)
            except TimeoutError:
                raise _Stalled from None

        try:
            await super().__call__(scope, receive, send_in_time)
        except _Stalled:
            log.info(
                "%s: the client read nothing for %.0f s; its stream ends", scope["path"], self._stall_timeout
            )
        except TransientError as error:
            log.warning("%s: stream cut short: %s", scope["path"], error)
        finally:
            self._readers.give_back()
            await self._content.aclose()


def _busy(readers: StreamingReaders) -> Response:
    response = _error(503, "busy", readers.refusal(), None)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def _streamed(
    readers: StreamingReaders,
    stall_timeout: float,
    edge: str,
    content: Callable[[], AsyncGenerator[bytes, None]],
    media_type: str,
    headers: dict[str, str] | None = None,
    *,
    first_now: bool = True,
) -> Response:
    """`content` streamed to the client, within the cap on streaming readers. With `first_now`
    its first chunk is read before the answer begins, so that a database that is unavailable
    gets a clear 503 rather than a stream that stops at once."""
    if not readers.try_take(edge):
        return _busy(readers)
    try:
        stream = content()
        if first_now:
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                first = b""
            stream = _prepend(first, stream)
    except BaseException:
        readers.give_back()
        raise
    return LimitedStream(stream, readers, stall_timeout, media_type, headers)


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    async with aclosing(rest):
        if first:
            yield first
        async for chunk in rest:
            yield chunk


def create_app(context: HttpContext) -> FastAPI:
    ledger = context.ledger
    settings = ledger.settings
    readers = ledger.streaming
    stall = settings.stream_stall_timeout
    app = FastAPI(
        title="Connection Ledger",
        version="1",
        description="The authoritative, replayable record of who is connected to which realtime session.",
        docs_url="/docs",
        redoc_url=None,
    )

    @app.exception_handler(HttpRejection)
    async def _rejected(_: Request, error: HttpRejection) -> Response:
        return _json(error.body(), error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0]
        field = str(first["loc"][-1]) if first.get("loc") else None
        return _error(422, "invalid_field", f"{field}: {first['msg']}", field)

    @app.exception_handler(TransientError)
    async def _unavailable(_: Request, error: TransientError) -> Response:
        response = _error(503, "unavailable", str(error), None)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> Response:
        return _error(error.status_code, "http_error", str(error.detail), None)

    # Added first, so it runs inside the Guard: tokens are checked before any answer.
    app.add_middleware(CountFastPath, counts=context.counts, settings=settings)
    app.add_middleware(Guard, settings=settings)

    async def _publish(events: list[tuple[Any, bytes]]) -> Response:
        if context.publisher is None:
            return _error(503, "unavailable", "this instance does not take writes (no NATS)", None)
        prefix = settings.subject_prefix
        await context.publisher.publish(
            [(f"{prefix}.{event.session_id}.{event.type.value}", raw) for event, raw in events]
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
        return await _publish(events_from_body(await request.body()))

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
        decoded = vonage_from_body(await request.body())
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
    async def get_session(session_id: str, minPosition: int | None = Query(None, ge=0)) -> Response:  # noqa: N803
        _session(session_id)
        await _wait(minPosition)
        return _json(await ledger.queries.connections(session_id))

    @app.get("/v1/sessions/{session_id}/count", tags=["queries"], summary="A session's connection count")
    async def get_count(session_id: str, minPosition: int | None = Query(None, ge=0)) -> Response:  # noqa: N803
        _session(session_id)
        return _json(await context.counts.count(session_id, minPosition, settings.min_position_wait))

    @app.get("/v1/sessions", tags=["queries"], summary="Sessions with their counts, paged")
    async def get_sessions(
        active: bool = True,
        limit: int = Query(
            100, ge=1, description=f"Sessions per page; a larger limit gets {MAX_SESSIONS_PAGE}"
        ),
        cursor: str | None = None,
        minPosition: int | None = Query(None, ge=0),  # noqa: N803
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
        after: int = Query(0, ge=0),
        limit: int | None = Query(None, ge=1),
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

        return await _streamed(readers, stall, "/v1/events", lines, NDJSON)

    @app.get("/v1/rejected", tags=["replay"], summary="Rejected messages in id order, NDJSON")
    async def get_rejected(after: int = Query(0, ge=0), limit: int | None = Query(None, ge=1)) -> Response:
        async def lines() -> AsyncGenerator[bytes, None]:
            async with aclosing(ledger.store.rejected(after=after, limit=limit)) as pages:
                async for rows in pages:
                    yield b"".join(orjson.dumps(rejected_to_dict(row)) + b"\n" for row in rows)

        return await _streamed(readers, stall, "/v1/rejected", lines, NDJSON)

    @app.get(
        "/v1/sessions/{session_id}/stream",
        tags=["replay"],
        summary="Server-Sent Events: a snapshot, then every record as it is appended",
    )
    async def get_stream(session_id: str, request: Request) -> Response:
        _session(session_id)
        last = request.headers.get("last-event-id")
        if last is not None and not last.isdigit():
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
        return await _streamed(
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
        return _json(asyncapi_document(settings))

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
            return _error(404, "not_found", f"no static file {name!r}", None)
        return FileResponse(path)

    return app
