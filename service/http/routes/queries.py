"""Queries: a session's live connections and count (now, or as of `at` a position or `asOf` a
time), its usage over a window, and the sessions with their counts, paged. `minPosition` waits
(up to LEDGER_MIN_POSITION_WAIT) for the ledger to reach that position. The dashboard's two
reads, a session's history and the overview of a recent window, are here too."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from service.events import MAX_POSITION
from service.http.answers import json as _json
from service.http.context import HttpContext
from service.http.intake import HttpRejection
from service.http.parameters import OptionalPosition, check_session
from service.pipeline.queries import AsOf, UsageWindow

__all__ = ["MAX_HISTORY_POINTS", "MAX_SESSIONS_PAGE", "router"]

At = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_POSITION,
        description="Answer as of this ledger position (at most the head); `position` says it",
    ),
]
AsOfTime = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_POSITION,
        description="Answer as of the last record recorded at or before this time (ms since the "
        "epoch, compared with recordedAt); `position` says which",
    ),
]

# The most sessions `GET /v1/sessions` answers in one page.
MAX_SESSIONS_PAGE = 1000
# The most points `GET /v1/sessions/{id}/history` answers.
MAX_HISTORY_POINTS = 5000


def router(context: HttpContext) -> APIRouter:
    routes = APIRouter()
    ledger = context.ledger
    settings = ledger.settings

    async def _wait(min_position: int | None) -> None:
        # The database is always at least as far as the in-memory counts: once they reflect
        # the position, so does any read that follows.
        if min_position:
            await context.counts.wait_for(min_position, settings.min_position_wait)

    @routes.get("/v1/sessions/{session_id}", tags=["queries"], summary="A session's live connections")
    async def get_session(
        session_id: str,
        minPosition: OptionalPosition = None,  # noqa: N803
        at: At = None,
        asOf: AsOfTime = None,  # noqa: N803
    ) -> Response:
        check_session(session_id)
        when = AsOf(at, asOf).check()
        await _wait(minPosition)
        return _json(await ledger.queries.connections(session_id, when))

    # Most plain requests are answered before routing, from memory (service/http/fast_count.py);
    # this route answers the rest, errors included, and is what the OpenAPI document describes.
    @routes.get("/v1/sessions/{session_id}/count", tags=["queries"], summary="A session's connection count")
    async def get_count(
        session_id: str,
        minPosition: OptionalPosition = None,  # noqa: N803
        at: At = None,
        asOf: AsOfTime = None,  # noqa: N803
    ) -> Response:
        check_session(session_id)
        when = AsOf(at, asOf).check()
        if when.now:
            return _json(await context.counts.count(session_id, minPosition, settings.min_position_wait))
        await _wait(minPosition)
        return _json(await ledger.queries.count(session_id, when))

    @routes.get(
        "/v1/sessions/{session_id}/usage",
        tags=["queries"],
        summary="A session's usage over a window: peak, connection-milliseconds, connections, "
        "destroys by reason, still open",
    )
    async def get_usage(
        session_id: str,
        start: Annotated[
            int | None,
            Query(
                alias="from", ge=0, le=MAX_POSITION, description="Window start, ms of event time (default 0)"
            ),
        ] = None,
        end: Annotated[
            int | None,
            Query(alias="to", ge=0, le=MAX_POSITION, description="Window end, ms, excluded (default now)"),
        ] = None,
        minPosition: OptionalPosition = None,  # noqa: N803
    ) -> Response:
        check_session(session_id)
        await _wait(minPosition)
        return _json(await ledger.queries.usage(session_id, UsageWindow(start, end)))

    @routes.get("/v1/sessions", tags=["queries"], summary="Sessions with their counts, paged")
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

    @routes.get(
        "/v1/sessions/{session_id}/history",
        tags=["queries"],
        summary="A session's count over its latest records, down-sampled, with its vetoed and "
        "synthetic records",
    )
    async def get_history(
        session_id: str,
        points: int = Query(
            600,
            ge=1,
            le=MAX_HISTORY_POINTS,
            description="Most points; past it, each point is the last record of a run of records",
        ),
    ) -> Response:
        check_session(session_id)
        return _json(await ledger.dashboard.history(session_id, points))

    @routes.get(
        "/v1/overview",
        tags=["queries"],
        summary="Live connections, records, vetoes and rejections over the last minutes, in "
        "buckets, and the sessions with the highest count",
    )
    async def get_overview(
        minutes: int = Query(60, ge=1, le=1440, description="The window: the last this many minutes"),
        buckets: int = Query(60, ge=1, le=720, description="Buckets the window is cut into"),
        top: int = Query(10, ge=1, le=100, description="Sessions in topSessions"),
    ) -> Response:
        return _json(await ledger.dashboard.overview(minutes, buckets, top))

    return routes
