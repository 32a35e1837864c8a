"""Streamed answers (NDJSON history, SSE) within the cap on streaming readers, and without
letting a client that stops reading hold anything for long.

A streamed answer holds a place among the streaming readers (given back however the stream
ends). A client that does not read makes each send wait for its socket to drain; past
LEDGER_STREAM_STALL_TIMEOUT the stream ends, its place goes to the next reader, and the
response is left unfinished, so that the client can tell the answer was cut. A database that
fails mid-stream ends it the same way; one that fails before the first byte is a 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from service.errors import ErrorCode, TransientError
from service.http.answers import unavailable
from service.streaming_readers import StreamingReaders

__all__ = ["LimitedStream", "streamed"]

log = logging.getLogger(__name__)


class _Stalled(Exception):
    """The client took longer than LEDGER_STREAM_STALL_TIMEOUT to accept a chunk."""


class LimitedStream(StreamingResponse):
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
                "%s: the client read nothing for %.0f s; stream ended", scope["path"], self._stall_timeout
            )
        except TransientError as error:
            log.warning("%s: stream cut short: %s", scope["path"], error)
        finally:
            self._readers.give_back()
            await self._content.aclose()


async def streamed(
    readers: StreamingReaders,
    stall_timeout: float,
    edge: str,
    content: Callable[[], AsyncGenerator[bytes, None]],
    media_type: str,
    headers: dict[str, str] | None = None,
    *,
    first_now: bool = True,
) -> Response:
    """`content` streamed to the client, within the cap on streaming readers (`edge` names the
    route in the refusal metric). With `first_now` its first chunk is read before the answer
    begins, so that a database that is unavailable gets a clear 503 rather than a stream that
    stops at once."""
    if not readers.try_take(edge):
        return unavailable(ErrorCode.BUSY, readers.refusal())
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
