"""Replay: the ledger's records and the rejected messages, in order, as NDJSON streamed within
the cap on streaming readers (service/http/streaming.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from service.http.context import HttpContext
from service.http.parameters import NDJSON, Limit, Position, check_session
from service.http.streaming import streamed
from service.ledger.records import rejected_to_dict

__all__ = ["router"]


def router(context: HttpContext) -> APIRouter:
    routes = APIRouter()
    ledger = context.ledger
    readers = ledger.streaming
    stall = ledger.settings.stream_stall_timeout

    @routes.get("/v1/events", tags=["replay"], summary="Ledger records in position order, NDJSON")
    async def get_events(
        sessionId: str | None = None,  # noqa: N803
        after: Position = 0,
        limit: Limit = None,
    ) -> Response:
        if sessionId is not None:
            check_session(sessionId)

        async def lines() -> AsyncGenerator[bytes, None]:
            # Encoded by the database, several ranges at once: the same lines as record_json
            # gives (the contract tests compare them), at the speed of `connledger replay`.
            async with aclosing(
                ledger.store.record_lines(after=after, session_id=sessionId, limit=limit)
            ) as chunks:
                async for chunk in chunks:
                    yield chunk

        return await streamed(readers, stall, "/v1/events", lines, NDJSON)

    @routes.get("/v1/rejected", tags=["replay"], summary="Rejected messages in id order, NDJSON")
    async def get_rejected(after: Position = 0, limit: Limit = None) -> Response:
        async def lines() -> AsyncGenerator[bytes, None]:
            async with aclosing(ledger.store.rejected(after=after, limit=limit)) as pages:
                async for rows in pages:
                    yield b"".join(orjson.dumps(rejected_to_dict(row)) + b"\n" for row in rows)

        return await streamed(readers, stall, "/v1/rejected", lines, NDJSON)

    return routes
