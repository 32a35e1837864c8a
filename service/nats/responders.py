"""Request/reply over NATS, as FastStream subscribers of the queries broker: a session's count
and connections (now, or as of `at` or `asOf`), its usage, and replay to the requester's inbox.

Every subscriber is in the queue group QUEUE_GROUP, so with several instances each request is
answered once. Bodies are typed (`SessionQuery`, `UsageQuery`, `ReplayRequest`): FastStream validates them,
after `decode_options` has read the raw bytes (empty means `{}`), and a body that breaks a rule
is answered by `Refusals`, the one place that turns a validation error into the error body
`{"error": "invalid_field", "message", "field"}`: as the answer of a count or connections
request, or, for a replay, as its first message, followed by the end marker.

nats-py awaits a subscription's callback before it hands over the next message, so a slow
answer (a minPosition wait, a long replay) would hold up every request behind it: each
subscriber handles up to MAX_IN_FLIGHT requests at once (FastStream's `max_workers`), and
past that the subscription's own pending limit holds the rest (back-pressure, as before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Annotated, Any, Protocol

import nats.errors
import orjson
from faststream import BaseMiddleware, Path
from faststream.message import StreamMessage
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from faststream.nats.message import NatsMessage as NatsStreamMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from service import schemas
from service.errors import ErrorCode, InvalidQuery, LedgerError, RejectCode, TransientError, error_body
from service.events import MAX_POSITION, is_session_id
from service.ledger.records import record_json
from service.ledger.store import LedgerStore
from service.pipeline.live_counts import LiveCounts
from service.pipeline.queries import AsOf, ProjectionQueries, UsageWindow
from service.settings import Settings
from service.streaming_readers import StreamingReaders
from service.subjects import (
    HEADER_REPLAY_END,
    HEADER_REPLAY_ERROR,
    QUEUE_GROUP,
    REPLAY,
    SESSION_CONNECTIONS,
    SESSION_COUNT,
    SESSION_USAGE,
)

__all__ = [
    "MAX_IN_FLIGHT",
    "Answering",
    "InlineCount",
    "ReplayRequest",
    "Responders",
    "SessionQuery",
    "UsageQuery",
    "declare_responders",
    "refusal",
]

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 256
# How long stopping waits for the requests in hand (FastStream's graceful_timeout).
DRAIN_SECONDS = 5.0

# The subjects as the document shows them: `{sessionId}` is a FastStream path parameter.
COUNT_SUBJECT = SESSION_COUNT.format(session_id="{sessionId}")
CONNECTIONS_SUBJECT = SESSION_CONNECTIONS.format(session_id="{sessionId}")
USAGE_SUBJECT = SESSION_USAGE.format(session_id="{sessionId}")
POSITION_RULE = f"must be an integer from 0 to {MAX_POSITION}"
NOT_AN_OBJECT = "the request body must be empty or a JSON object"
# The message of a refusal naming each field (the contract's wording).
FIELD_RULES = {
    "minPosition": f"minPosition {POSITION_RULE}",
    "at": f"at {POSITION_RULE}",
    "asOf": f"asOf {POSITION_RULE} (ms since the epoch)",
    "from": f"from {POSITION_RULE} (ms since the epoch)",
    "to": f"to {POSITION_RULE} (ms since the epoch)",
    "after": f"after {POSITION_RULE}",
    "limit": f"limit {POSITION_RULE}",
    "sessionId": "sessionId must be a valid session id",
}


def _optional_int(alias: str, description: str) -> Any:
    return Field(None, alias=alias, ge=0, le=MAX_POSITION, description=description)


_MIN_POSITION = (
    "Answer only once the ledger holds this position (waits up to LEDGER_MIN_POSITION_WAIT seconds)"
)


class SessionQuery(BaseModel):
    """The body of a count or connections request: empty, `{}`, or options: `minPosition`, and
    `at` or `asOf` to answer as of a position or a time."""

    # Unknown fields are ignored, as they always were.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    min_position: StrictInt | None = _optional_int("minPosition", _MIN_POSITION)
    at: StrictInt | None = _optional_int(
        "at", "Answer as of this ledger position (at most the head); `position` says it"
    )
    as_of: StrictInt | None = _optional_int(
        "asOf",
        "Answer as of the last record recorded at or before this time (ms since the epoch, "
        "compared with recordedAt); `position` says which",
    )

    @property
    def when(self) -> AsOf:
        return AsOf(self.at, self.as_of)


class UsageQuery(BaseModel):
    """The body of a usage request: empty, `{}`, or the window `{"from": ms, "to": ms}`."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    start: StrictInt | None = _optional_int("from", "Window start, ms of event time (default 0)")
    end: StrictInt | None = _optional_int("to", "Window end, ms, excluded (default now)")
    min_position: StrictInt | None = _optional_int("minPosition", _MIN_POSITION)


class ReplayRequest(BaseModel):
    """What to replay: records after `after`, at most `limit`, of one session or all."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    # In the order a refusal names the first field at fault.
    after: StrictInt = Field(0, ge=0, le=MAX_POSITION, description="The position to start after")
    limit: StrictInt | None = Field(None, ge=0, le=MAX_POSITION, description="The most records sent")
    session_id: StrictStr | None = Field(
        None, alias="sessionId", description="Only this session's records (a valid session id)"
    )

    @field_validator("session_id")
    @classmethod
    def _a_session_id(cls, value: str | None) -> str | None:
        if value is not None and not is_session_id(value):
            raise ValueError("not a session id")
        return value


class _NotJson:
    """What a body that is not JSON decodes to: no model takes it, and the refusal says so."""


async def decode_options(message: NatsStreamMessage) -> Any:
    """The request body as JSON, an empty body as `{}`: FastStream validates the result
    against the handler's model (its default decoder would take bad JSON as text). A coroutine,
    because FastStream runs a plain function given as a decoder in a worker thread: a thread
    hop per request, which cost 1 ms a request and capped the answers near 1,000/s."""
    data = message.body
    if not data.strip():
        return {}
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _NotJson()


def refusal(error: ValidationError) -> dict[str, str | None]:
    """The one error body of a request body that breaks a rule: its first field at fault, or
    none when the body is not a JSON object at all."""
    for detail in error.errors():
        # The location starts with the handler's parameter, then the field.
        field = next((str(part) for part in detail["loc"][1:2]), "")
        if field in FIELD_RULES:
            return error_body(RejectCode.INVALID_FIELD, FIELD_RULES[field], field)
    return error_body(RejectCode.INVALID_FIELD, NOT_AN_OBJECT)


class BadRequest(LedgerError):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Answering(Protocol):
    """What the subscribers call: a count or connections answer's bytes; a replay sends its
    records and end marker itself; `refuse_replay` ends a refused one."""

    async def count(self, session_id: str, query: SessionQuery) -> bytes: ...

    async def connections(self, session_id: str, query: SessionQuery) -> bytes: ...

    async def usage(self, session_id: str, query: UsageQuery) -> bytes: ...

    async def replay(self, request: ReplayRequest, inbox: str) -> None: ...

    async def refuse_replay(self, inbox: str, body: dict[str, str | None], after: int) -> None: ...


async def _valid_after(message: StreamMessage[Any]) -> int:
    """A refused replay's `after`, when that field itself is valid (its end marker says it)."""
    options = await decode_options(message)  # type: ignore[arg-type]
    after = options.get("after") if isinstance(options, dict) else None
    return after if type(after) is int and 0 <= after <= MAX_POSITION else 0


class Refusals(BaseMiddleware):
    """A body FastStream could not validate: refused with `refusal(...)`, the request answered
    (FastStream sends what this returns to the reply subject) or, for a replay, ended."""

    def __init__(self, msg: Msg, /, *, context: Any, answering: Answering) -> None:
        super().__init__(msg, context=context)
        self.answering = answering

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        try:
            return await call_next(msg)
        except ValidationError as error:
            body = refusal(error)
            if msg.raw_message.subject == REPLAY:
                if msg.reply_to:
                    await self.answering.refuse_replay(msg.reply_to, body, await _valid_after(msg))
                return None
            return orjson.dumps(body)


# What the document shows of the answers (JSON Schemas shared with the OpenAPI document).
CountAnswer = Annotated[dict[str, Any], WithJsonSchema({**schemas.COUNT_ANSWER, "title": "CountAnswer"})]
ConnectionsAnswer = Annotated[
    dict[str, Any], WithJsonSchema({**schemas.CONNECTIONS_ANSWER, "title": "ConnectionsAnswer"})
]
UsageAnswer = Annotated[dict[str, Any], WithJsonSchema({**schemas.USAGE_ANSWER, "title": "UsageAnswer"})]
ErrorAnswer = Annotated[dict[str, Any], WithJsonSchema({**schemas.ERROR, "title": "Error"})]
Record = Annotated[dict[str, Any], WithJsonSchema({**schemas.RECORD, "title": "Record"})]


def _session_handler(
    answer: Callable[[str, SessionQuery], Awaitable[bytes]],
) -> Callable[[SessionQuery, str], Awaitable[bytes]]:
    async def handle(query: SessionQuery, session_id: Annotated[str, Path("sessionId")]) -> bytes:
        return await answer(session_id, query)

    return handle


def _usage_handler(
    answer: Callable[[str, UsageQuery], Awaitable[bytes]],
) -> Callable[[UsageQuery, str], Awaitable[bytes]]:
    async def handle(query: UsageQuery, session_id: Annotated[str, Path("sessionId")]) -> bytes:
        return await answer(session_id, query)

    return handle


def _subscriber(
    broker: NatsBroker, subject: str, title: str, *, description: str, no_reply: bool = False
) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """A request/reply subscriber: in the queue group, bodies decoded by `decode_options`, up to
    MAX_IN_FLIGHT requests in hand."""
    return broker.subscriber(
        subject,
        queue=QUEUE_GROUP,
        decoder=decode_options,
        max_workers=MAX_IN_FLIGHT,
        no_reply=no_reply,
        title=title,
        description=description,
    )


def declare_responders(broker: NatsBroker, answering: Answering) -> Any:
    """The request/reply subscribers, and for the document the answers they send (declared as
    publishers: FastStream's document has no replies of its own). Returns the count
    subscriber, for `InlineCount`."""
    broker.add_middleware(lambda msg, /, *, context: Refusals(msg, context=context, answering=answering))

    subscribers = {}
    for subject, title, description, answer in (
        (
            COUNT_SUBJECT,
            "count",
            'Request/reply: a session\'s count. Body empty, {} or {"minPosition": n}. The answer is a '
            "CountAnswer, or an Error (invalid_field naming sessionId or minPosition; unavailable).",
            answering.count,
        ),
        (
            CONNECTIONS_SUBJECT,
            "connections",
            "Request/reply: a session's live connections. Body as for count. The answer is a "
            "ConnectionsAnswer, or an Error as for count.",
            answering.connections,
        ),
    ):
        subscribers[title] = _subscriber(broker, subject, title, description=description)
        subscribers[title](_session_handler(answer))
    _subscriber(
        broker,
        USAGE_SUBJECT,
        "usage",
        description="Request/reply: a session's usage over [from, to) (ms of event time). Body empty, "
        '{} or {"from": ms, "to": ms, "minPosition": n}; the window defaults to the session\'s whole '
        "life up to now. The answer is a UsageAnswer, or an Error (invalid_field naming sessionId, "
        "from, to or minPosition; unavailable).",
    )(_usage_handler(answering.usage))

    @_subscriber(
        broker,
        REPLAY,
        "replay",
        # The records and the end marker are the answer, sent by the handler: nothing else.
        no_reply=True,
        description="Request {sessionId?, after?, limit?}: the records are sent to the reply inbox in "
        "position order, then an empty message with header Ledger-Replay-End: <last position "
        "sent>. A refused request gets an error answer first; the end message of a refused or "
        "cut-short replay also has a header Ledger-Replay-Error (invalid_field; busy past "
        "LEDGER_MAX_STREAMING_READERS; unavailable; internal).",
    )
    async def replay(request: ReplayRequest, message: NatsMessage) -> None:
        if message.reply_to:
            await answering.replay(request, message.reply_to)

    for subject, title, schema, summary in (
        (COUNT_SUBJECT, "countAnswer", CountAnswer | ErrorAnswer, "The answer to a count request"),
        (
            CONNECTIONS_SUBJECT,
            "connectionsAnswer",
            ConnectionsAnswer | ErrorAnswer,
            "The answer to a connections request",
        ),
        (USAGE_SUBJECT, "usageAnswer", UsageAnswer | ErrorAnswer, "The answer to a usage request"),
        (
            REPLAY,
            "replayRecords",
            Record | ErrorAnswer,
            "What a replay sends to the reply inbox: the records (each as on the LEDGER stream), an "
            "Error first when refused, and last an empty message with header "
            f"{HEADER_REPLAY_END} (and {HEADER_REPLAY_ERROR} when refused or cut short)",
        ),
    ):
        broker.publisher(subject, title=title, schema=schema, description=f"{summary}, on its reply subject")
    return subscribers["count"]


class InlineCount:
    """The count subscriber's subscription, with plain requests answered in its callback.

    A plain count request (no options) is answered from memory: the answer is ready, and
    FastStream's way through a request (its middlewares, parser, decoder, validation and
    response publisher, in a task of its own) costs many times the answer. Measured, medians of
    3 runs of `.venv/bin/python bench/faststream_vs_raw.py --messages 30000 --requests 3000
    --repeat 3`: FastStream's count subscriber answered 2,500 requests/s with 100 in flight
    (p50 0.56 ms one at a time), a nats-py callback 16,500 (p50 0.23 ms), this subscriber with
    plain requests inline 14,700 (p50 0.38 ms). Under ingest at 1,000 count requests/s
    (bench/ingest_nats.py, phase queries; both backends, a shared and noisy machine) the count's
    p99 was 537-1,034 ms through FastStream alone (its decoder then a plain function, which
    FastStream runs in a worker thread), 3.6-31 ms with the inline path over six runs, and
    8.9-116 ms for the service before FastStream in six runs alternating with them. Anything
    else (minPosition, a bad subject or body, counts not loaded) goes to the FastStream
    subscriber, as the subscription's messages would: `consume`, in a task of its own, at most
    MAX_IN_FLIGHT at once.

    The subscription is made on the queries broker's own connection before the broker starts
    its subscribers, and set as the count subscriber's `subscription`, which FastStream then
    keeps (it subscribes only a subscriber that has none) and unsubscribes when it stops."""

    def __init__(self, subscriber: Any, counts: LiveCounts) -> None:
        self.subscriber = subscriber
        self.counts = counts
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def install(self, nc: Client) -> None:
        self.subscriber.subscription = await nc.subscribe(
            SESSION_COUNT.format(session_id="*"), queue=QUEUE_GROUP, cb=self._receive
        )

    async def _receive(self, message: Msg) -> None:
        if message.data.strip() in (b"", b"{}"):
            parts = message.subject.split(".")
            if len(parts) == 4 and is_session_id(parts[2]):
                answer = self.counts.count_now(parts[2])
                if answer is not None:
                    await message.respond(orjson.dumps(answer))
                    return
        # nats-py awaits this callback before it hands over the next message: a minPosition
        # wait must not hold up the requests behind it.
        await self._slots.acquire()
        task = asyncio.create_task(self.subscriber.consume(message))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._slots.release()


class Responders:
    """The answers, over the ledger's read side; replay records go out through `broker`."""

    def __init__(
        self,
        broker: NatsBroker,
        queries: ProjectionQueries,
        store: LedgerStore,
        settings: Settings,
        counts: LiveCounts,
        readers: StreamingReaders,
    ) -> None:
        self.broker = broker
        self.readers = readers
        self.queries = queries
        self.store = store
        self.settings = settings
        self.counts = counts

    async def count(self, session_id: str, query: SessionQuery) -> bytes:
        if (
            query.min_position is None
            and query.at is None
            and query.as_of is None
            and is_session_id(session_id)
        ):
            # A plain count is answered from memory, at once.
            answer = self.counts.count_now(session_id)
            if answer is not None:
                return orjson.dumps(answer)
        return await self._answer(session_id, query, connections=False)

    async def connections(self, session_id: str, query: SessionQuery) -> bytes:
        return await self._answer(session_id, query, connections=True)

    async def usage(self, session_id: str, query: UsageQuery) -> bytes:
        async def answer() -> dict[str, Any]:
            window = UsageWindow(query.start, query.end)
            window.resolve()  # a bad window is refused before any wait
            await self._wait(query.min_position)
            return await self.queries.usage(session_id, window)

        return await self._answered(session_id, answer)

    async def _answer(self, session_id: str, query: SessionQuery, connections: bool) -> bytes:
        async def answer() -> dict[str, Any]:
            min_position = query.min_position
            when = query.when.check()
            if connections:
                await self._wait(min_position)
                return await self.queries.connections(session_id, when)
            if not when.now:
                await self._wait(min_position)
                return await self.queries.count(session_id, when)
            return await self.counts.count(session_id, min_position, self.settings.min_position_wait)

        return await self._answered(session_id, answer)

    async def _wait(self, min_position: int | None) -> None:
        # The database is always at least as far as the in-memory counts.
        if min_position:
            await self.counts.wait_for(min_position, self.settings.min_position_wait)

    async def _answered(self, session_id: str, answer: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
        """The answer's bytes, or the error body of what went wrong."""
        try:
            if not is_session_id(session_id):
                raise BadRequest("the sessionId in the subject is not a valid session id", "sessionId")
            return orjson.dumps(await answer())
        except BadRequest as error:
            return orjson.dumps(error_body(RejectCode.INVALID_FIELD, error.message, error.field))
        except InvalidQuery as error:
            return orjson.dumps(error_body(RejectCode.INVALID_FIELD, error.message, error.field))
        except TransientError as error:
            return orjson.dumps(error_body(ErrorCode.UNAVAILABLE, str(error)))

    async def replay(self, request: ReplayRequest, inbox: str) -> None:
        """Records to the requester's inbox, then the end marker. The marker closes every
        replay, a refused or cut-short one too, so that a client reading until it never waits
        out a timeout; `Ledger-Replay-Error` then says why the records stop where they do."""
        after = request.after
        if not self.readers.try_take("ledger.replay"):
            await self._send(inbox, orjson.dumps(error_body(ErrorCode.BUSY, self.readers.refusal())))
            await self._end(inbox, after, "busy")
            return
        last = after
        failure: str | None = None
        try:
            pages = self.store.records(after=after, session_id=request.session_id, limit=request.limit)
            async with aclosing(pages):
                async for rows in pages:
                    for row in rows:
                        await self._send(inbox, record_json(row))
                    last = rows[-1][0]
                    # Let the server take each chunk before the next: memory stays constant.
                    # A requester that does not read is the server's to cut off (a slow
                    # consumer); this waits only for the server, never for the requester.
                    await self.broker.connection.flush()
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
        await self._end(inbox, last, failure)

    async def refuse_replay(self, inbox: str, body: dict[str, str | None], after: int) -> None:
        await self._send(inbox, orjson.dumps(body))
        await self._end(inbox, after, RejectCode.INVALID_FIELD.value)

    async def _send(self, inbox: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        await self.broker.publish(data, inbox, headers=headers)

    async def _end(self, inbox: str, last: int, failure: str | None) -> None:
        headers = {HEADER_REPLAY_END: str(last)}
        if failure is not None:
            headers[HEADER_REPLAY_ERROR] = failure
        await self._send(inbox, b"", headers)
