"""`GET /v1/sessions/{sessionId}/count`, the route load balancers and dashboards poll hardest,
answered at the ASGI layer from the in-memory counts.

A plain request (a valid session id, no query string or only a well-formed `minPosition`) is
answered here without routing, validation models or response classes: the answer is already in
memory, and those layers would cost several times what the answer does. Anything else goes on to
the FastAPI route, which answers the same thing and every error in the contract's shape; it is
also what the OpenAPI document describes.
"""

from __future__ import annotations

from urllib.parse import unquote

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ErrorCode, TransientError, error_body
from service.events import is_session_id
from service.pipeline.live_counts import LiveCounts
from service.settings import Settings

__all__ = ["CountFastPath"]

PREFIX = "/v1/sessions/"
SUFFIX = "/count"
_HEADERS = [(b"content-type", b"application/json")]


class _NotPlain(Exception):
    """A request for the FastAPI route to answer, errors included."""


def _min_position(query: bytes) -> int | None:
    """The minPosition of a query string that holds nothing else; None when it is empty."""
    if not query:
        return None
    name, _, value = query.partition(b"=")
    if name != b"minPosition" or not value.isdigit() or len(value) > 18:
        raise _NotPlain
    return int(value)


class CountFastPath:
    def __init__(self, app: ASGIApp, counts: LiveCounts, settings: Settings) -> None:
        self.app = app
        self.counts = counts
        self.max_wait = settings.min_position_wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(PREFIX) and path.endswith(SUFFIX):
                session_id = unquote(path[len(PREFIX) : -len(SUFFIX)])
                try:
                    min_position = _min_position(scope["query_string"])
                except _NotPlain:
                    pass
                else:
                    if is_session_id(session_id):
                        await self._answer(session_id, min_position, send)
                        return
        await self.app(scope, receive, send)

    async def _answer(self, session_id: str, min_position: int | None, send: Send) -> None:
        status = 200
        try:
            body = orjson.dumps(await self.counts.count(session_id, min_position, self.max_wait))
        except TransientError as error:
            status = 503
            body = orjson.dumps(error_body(ErrorCode.UNAVAILABLE, str(error)))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
