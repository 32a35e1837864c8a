"""Request/reply over NATS: session count and connections, and replay to the requester's inbox.

Subscriptions use a queue group, so with several instances each request is answered once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from service.errors import ErrorCode, LedgerError, RejectCode, TransientError, error_body
from service.events import MAX_POSITION, is_session_id
from service.ledger.records import record_json
from service.ledger.store import LedgerStore
from service.pipeline.live_counts import LiveCounts
from service.pipeline.queries import ProjectionQueries
from service.settings import Settings
from service.streaming_readers import StreamingReaders

__all__ = ["Responders"]

log = logging.getLogger(__name__)
QUEUE = "connection-ledger"
MAX_IN_FLIGHT = 256
DRAIN_SECONDS = 2.0


class BadRequest(LedgerError):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _options(data: bytes) -> dict[str, Any]:
    if not data.strip():
        return {}
    try:
        options = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body must be empty or a JSON object", None) from None
    if not isinstance(options, dict):
        raise BadRequest("the request body must be empty or a JSON object", None)
    return options


def _non_negative(options: dict[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_POSITION:
        raise BadRequest(f"{name} must be an integer from 0 to {MAX_POSITION}", name)
    return value


class Responders:
    def __init__(
        self,
        nc: Client,
        queries: ProjectionQueries,
        store: LedgerStore,
        settings: Settings,
        counts: LiveCounts,
        readers: StreamingReaders,
    ) -> None:
        self.nc = nc
        self.readers = readers
        self.queries = queries
        self.store = store
        self.settings = settings
        self.counts = counts
        self.subscriptions: list[Subscription] = []
        self._count_task = self._concurrently(self._count)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.subscriptions = [
            await self.nc.subscribe("ledger.sessions.*.count", queue=QUEUE, cb=self._count_dispatch),
            await self.nc.subscribe(
                "ledger.sessions.*.connections", queue=QUEUE, cb=self._concurrently(self._connections)
            ),
            await self.nc.subscribe("ledger.replay", queue=QUEUE, cb=self._concurrently(self._replay)),
        ]

    async def _count_dispatch(self, message: Msg) -> None:
        """A plain count request (no options) is answered here, from memory, without a task
        of its own: the answer is ready, and a task would cost more than the answer. Anything
        else (minPosition, a bad subject or body) takes the general path."""
        if message.data.strip() in (b"", b"{}"):
            parts = message.subject.split(".")
            if len(parts) == 4 and is_session_id(parts[2]):
                answer = self.counts.count_now(parts[2])
                if answer is not None:
                    await message.respond(orjson.dumps(answer))
                    return
        await self._count_task(message)

    def _concurrently(
        self, handler: Callable[[Msg], Coroutine[Any, Any, None]]
    ) -> Callable[[Msg], Awaitable[None]]:
        """nats-py awaits a subscription's callback before it hands over the next message, so a
        slow answer (a minPosition wait, a long replay) would hold up every request behind it.
        Each request gets a task of its own instead, at most MAX_IN_FLIGHT at a time."""

        async def dispatch(message: Msg) -> None:
            await self._slots.acquire()
            task: asyncio.Task[None] = asyncio.create_task(handler(message))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

        return dispatch

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("answering a request failed", exc_info=task.exception())

    async def stop(self) -> None:
        """Take no more requests and let those in hand finish. A drain waits for the server to
        confirm (a flush): with the server gone, each would wait out its timeout, so then
        the subscriptions are just dropped, and no drain waits longer than DRAIN_SECONDS."""
        for subscription in self.subscriptions:
            try:
                if self.nc.is_connected:
                    await asyncio.wait_for(subscription.drain(), DRAIN_SECONDS)  # type: ignore[no-untyped-call]
                else:
                    await subscription.unsubscribe()
            except (TimeoutError, nats.errors.Error) as error:
                log.debug("stopping %s: %s", subscription.subject, error)
        self.subscriptions = []
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _answer(self, message: Msg, connections: bool) -> None:
        try:
            # ledger.sessions.<sessionId>.count|connections
            parts = message.subject.split(".")
            session_id = parts[2] if len(parts) == 4 else ""
            if not is_session_id(session_id):
                raise BadRequest("the sessionId in the subject is not a valid session id", "sessionId")
            options = _options(message.data)
            min_position = _non_negative(options, "minPosition")
            wait = self.settings.min_position_wait
            if connections:
                # The database is always at least as far as the in-memory counts.
                if min_position:
                    await self.counts.wait_for(min_position, wait)
                answer = await self.queries.connections(session_id)
            else:
                answer = await self.counts.count(session_id, min_position, wait)
            body = orjson.dumps(answer)
        except BadRequest as error:
            body = orjson.dumps(error_body(RejectCode.INVALID_FIELD, error.message, error.field))
        except TransientError as error:
            body = orjson.dumps(error_body(ErrorCode.UNAVAILABLE, str(error)))
        await message.respond(body)

    async def _count(self, message: Msg) -> None:
        await self._answer(message, connections=False)

    async def _connections(self, message: Msg) -> None:
        await self._answer(message, connections=True)

    async def _replay(self, message: Msg) -> None:
        """Records to the requester's inbox, then the end marker. The marker closes every
        replay, a refused or cut-short one too, so that a client reading until it never waits
        out a timeout; `Ledger-Replay-Error` then says why the records stop where they do."""
        if not message.reply:
            return
        after = 0
        try:
            options = _options(message.data)
            after = _non_negative(options, "after") or 0
            limit = _non_negative(options, "limit")
            session_id = options.get("sessionId")
            if session_id is not None and (type(session_id) is not str or not is_session_id(session_id)):
                raise BadRequest("sessionId must be a valid session id", "sessionId")
        except BadRequest as error:
            await self.nc.publish(
                message.reply,
                orjson.dumps(error_body(RejectCode.INVALID_FIELD, error.message, error.field)),
            )
            await self._end_replay(message.reply, after, RejectCode.INVALID_FIELD.value)
            return
        if not self.readers.try_take("ledger.replay"):
            await self.nc.publish(
                message.reply,
                orjson.dumps(error_body(ErrorCode.BUSY, self.readers.refusal())),
            )
            await self._end_replay(message.reply, after, "busy")
            return
        last = after
        failure: str | None = None
        try:
            async with aclosing(self.store.records(after=after, session_id=session_id, limit=limit)) as pages:
                async for rows in pages:
                    for row in rows:
                        await self.nc.publish(message.reply, record_json(row))
                    last = rows[-1][0]
                    # Let the server take each chunk before the next: memory stays constant.
                    # A requester that does not read is the server's to cut off (a slow
                    # consumer); this waits only for the server, never for the requester.
                    await self.nc.flush()
        except TransientError as error:
            log.warning("replay cut short: %s", error)
            failure = "unavailable"
        except nats.errors.Error as error:
            # NATS itself is gone or refuses us: nobody would receive the end marker either.
            log.warning("replay cut short by NATS: %s", error)
            return
        except Exception:
            # Whatever went wrong, the requester is told the records stop here.
            log.exception("replay failed")
            failure = "internal"
        finally:
            self.readers.give_back()
        await self._end_replay(message.reply, last, failure)

    async def _end_replay(self, inbox: str, last: int, failure: str | None) -> None:
        headers = {"Ledger-Replay-End": str(last)}
        if failure is not None:
            headers["Ledger-Replay-Error"] = failure
        await self.nc.publish(inbox, b"", headers=headers)
