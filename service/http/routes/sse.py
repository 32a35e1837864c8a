"""A session's Server-Sent Events stream: a snapshot, then every record as it is appended;
`Last-Event-ID` resumes after that position (service/http/sse.py writes the events)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.events import MAX_POSITION
from service.http.context import HttpContext
from service.http.intake import HttpRejection
from service.http.parameters import check_session
from service.http.sse import session_stream
from service.http.streaming import streamed

__all__ = ["router"]


def router(context: HttpContext) -> APIRouter:
    routes = APIRouter()
    ledger = context.ledger
    readers = ledger.streaming
    stall = ledger.settings.stream_stall_timeout

    @routes.get(
        "/v1/sessions/{session_id}/stream",
        tags=["replay"],
        summary="Server-Sent Events: a snapshot, then every record as it is appended",
    )
    async def get_stream(session_id: str, request: Request) -> Response:
        check_session(session_id)
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

    return routes
