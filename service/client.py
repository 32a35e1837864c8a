"""A typed client of Connection Ledger for downstream services, over NATS.

    async with LedgerClient("nats://127.0.0.1:4222") as ledger:
        print(await ledger.count("room-7"))                    # Count(sessionId, count, position)
        print(await ledger.connections("room-7", at=1204311))  # who was there at that position
        async for item in ledger.watch("room-7"):               # a snapshot, then every record
            ...

It is a library for other services, not part of the service: it talks to the service's NATS
interface (docs/nats.md) with nats-py directly, not through the service's FastStream
application, and imports nothing of the server side, only the subject and header names
(`service.subjects`) and the session id rule (`service.events`). docs/client.md shows it in use.

- `count`, `connections` and `usage` are the request/reply queries, now or as of a position
  (`at`) or a time (`as_of`); an error answer raises `LedgerRequestError` with its `error`,
  `message` and `field`.
- `replay` reads `ledger.replay` a page at a time (`REPLAY_PAGE` records a request), so that a
  range of any length is read in constant memory and a slow reader never overruns its inbox.
- `watch` yields a session's snapshot (its connections as of a position P), then every record
  after P from the JetStream stream LEDGER, with no gap and no duplicate across the hand-off,
  and resumes from the last position it yielded after a reconnect, a NATS node's death or a
  consumer gone. How, in `Watch`'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from service.events import is_session_id
from service.subjects import (
    HEADER_REPLAY_END,
    HEADER_REPLAY_ERROR,
    RECORDS_FILTER,
    REPLAY,
    SESSION_CONNECTIONS,
    SESSION_COUNT,
    SESSION_USAGE,
    record_subject,
)

__all__ = [
    "REPLAY_PAGE",
    "Connection",
    "Connections",
    "Count",
    "LedgerClient",
    "LedgerClientError",
    "LedgerRequestError",
    "Peak",
    "Record",
    "ReplayError",
    "Usage",
    "Watch",
]

log = logging.getLogger(__name__)

# Records asked for by one replay request: the most a replay (or a watch filling a gap) holds.
REPLAY_PAGE: Final = 1000
# Records taken from the LEDGER stream at a time by a watch.
WATCH_BATCH: Final = 256
# How long a watch's pull request waits for records before it checks its consumer is there.
FETCH_SECONDS: Final = 2.0
# How long the server keeps a watch's consumer once its client stops asking (gone, or slow).
CONSUMER_INACTIVE_SECONDS: Final = 60.0
# The pause before a watch resumes after a failure, in a row; the last one repeats.
RESUME_SECONDS: Final = (0.05, 0.2, 0.5, 1.0, 2.0)
# The session whose count request tells the head: every answer carries the head position, and
# a session with no records answers count 0.
HEAD_PROBE_SESSION: Final = "ledger-client-head"
# Error codes a request may meet for now only (docs/nats.md): a watch asks again.
TRANSIENT_CODES: Final = frozenset({"busy", "unavailable", "internal"})


class LedgerClientError(Exception):
    """Base of what this client raises on purpose."""


class LedgerRequestError(LedgerClientError):
    """The service refused a request: its error body `{"error", "message", "field"}`."""

    def __init__(self, error: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{error}: {message}" + (f" (field {field})" if field else ""))
        self.error = error
        self.message = message
        self.field = field

    @property
    def transient(self) -> bool:
        """Whether asking again later may succeed (`busy`, `unavailable`, `internal`)."""
        return self.error in TRANSIENT_CODES


class ReplayError(LedgerRequestError):
    """A replay ended with `Ledger-Replay-Error`: refused, or cut short after `last`."""

    def __init__(self, error: str, message: str, field: str | None, last: int) -> None:
        super().__init__(error, message, field)
        self.last = last


@dataclass(frozen=True, slots=True)
class Connection:
    connection_id: str
    creation_time: int
    data: str | None

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Connection:
        return cls(document["connectionId"], document["creationTime"], document.get("data"))


@dataclass(frozen=True, slots=True)
class Count:
    """A session's count; `position` is the ledger position it is as of."""

    session_id: str
    count: int
    position: int


@dataclass(frozen=True, slots=True)
class Connections:
    """A session's live connections as of `position`: what `watch` yields first, too."""

    session_id: str
    count: int
    position: int
    connections: tuple[Connection, ...]


@dataclass(frozen=True, slots=True)
class Peak:
    count: int
    timestamp: int | None


@dataclass(frozen=True, slots=True)
class Usage:
    """A session's usage over `[start, end)` of event time (the answer's `from` and `to`);
    docs/history.md defines each figure."""

    session_id: str
    start: int
    end: int
    peak: Peak
    connection_milliseconds: int
    connections: int
    by_reason: dict[str, int]
    open: int
    position: int


@dataclass(frozen=True, slots=True)
class Record:
    """One record of the ledger, as on the LEDGER stream and in a replay (docs/nats.md)."""

    position: int
    sequence: int
    id: str
    type: str
    session_id: str
    timestamp: int
    recorded_at: int
    connection: Connection
    reason: str | None
    source: str
    vendor_reason: str | None
    origin: str | None
    default_prevented: bool
    prevented_by: str | None
    count: int

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Record:
        """From the record's JSON; fields a later release may add are ignored."""
        return cls(
            position=document["position"],
            sequence=document["sequence"],
            id=document["id"],
            type=document["type"],
            session_id=document["sessionId"],
            timestamp=document["timestamp"],
            recorded_at=document["recordedAt"],
            connection=Connection.from_json(document["connection"]),
            reason=document.get("reason"),
            source=document.get("source", "native"),
            vendor_reason=document.get("vendorReason"),
            origin=document.get("origin"),
            default_prevented=document["defaultPrevented"],
            prevented_by=document.get("preventedBy"),
            count=document["count"],
        )


def _checked_session(session_id: str) -> str:
    # Checked here: a dot or a wildcard would make another subject of it.
    if not is_session_id(session_id):
        raise ValueError(f"not a session id: {session_id!r} (1 to 256 of A-Z a-z 0-9 - _ ~ = :)")
    return session_id


def _options(**given: int | None) -> bytes:
    body = {name: value for name, value in given.items() if value is not None}
    return orjson.dumps(body) if body else b""


def _refusal(document: Any) -> LedgerRequestError | None:
    """The error an answer is, when it is the error body."""
    if isinstance(document, dict) and isinstance(document.get("error"), str) and "position" not in document:
        return LedgerRequestError(document["error"], str(document.get("message", "")), document.get("field"))
    return None


def _answer(data: bytes) -> dict[str, Any]:
    document = orjson.loads(data)
    refused = _refusal(document)
    if refused is not None:
        raise refused
    if not isinstance(document, dict):
        raise LedgerClientError(f"the service answered {data[:200]!r}, not a JSON object")
    return document


def _count(document: dict[str, Any]) -> Count:
    return Count(document["sessionId"], document["count"], document["position"])


def _connections(document: dict[str, Any]) -> Connections:
    return Connections(
        document["sessionId"],
        document["count"],
        document["position"],
        tuple(Connection.from_json(c) for c in document["connections"]),
    )


def _usage(document: dict[str, Any]) -> Usage:
    peak = document["peak"]
    return Usage(
        session_id=document["sessionId"],
        start=document["from"],
        end=document["to"],
        peak=Peak(peak["count"], peak["timestamp"]),
        connection_milliseconds=document["connectionMilliseconds"],
        connections=document["connections"],
        by_reason=dict(document["byReason"]),
        open=document["open"],
        position=document["position"],
    )


def _servers(nats_url: str | Sequence[str]) -> list[str]:
    urls = nats_url.split(",") if isinstance(nats_url, str) else list(nats_url)
    return [url.strip() for url in urls if url.strip()]


async def _log_error(error: Exception) -> None:
    # One line, not nats-py's traceback: a reconnect is an event, not a bug.
    log.warning("nats: %s: %s", type(error).__name__, error)


class LedgerClient:
    """The ledger's queries, replay and watch, over one NATS connection.

    `LedgerClient(url)` connects when entered (`async with`) or opened (`await .open()`, or
    `await LedgerClient.connect(url)`), with `max_reconnect_attempts=-1` unless `options` (any
    of `nats.connect`'s) say otherwise. Given a connected nats-py `Client` instead of a URL, it
    uses that connection and leaves it open when it closes. `stream` is the LEDGER stream's
    name (`LEDGER_LEDGER_STREAM`); `timeout` bounds each request, in seconds."""

    def __init__(
        self,
        nats_url: str | Sequence[str] | Client,
        *,
        timeout: float = 5.0,
        stream: str = "LEDGER",
        **options: Any,
    ) -> None:
        self.timeout = timeout
        self.stream = stream
        self._given = nats_url if isinstance(nats_url, Client) else None
        self._servers = [] if isinstance(nats_url, Client) else _servers(nats_url)
        self._options: dict[str, Any] = {
            "name": "connection-ledger-client",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "error_cb": _log_error,
            **options,
        }
        self._nc: Client | None = self._given

    @classmethod
    async def connect(cls, nats_url: str | Sequence[str] | Client, **options: Any) -> LedgerClient:
        """A client, connected (`options` as for the constructor); `await client.close()` when
        done."""
        return await cls(nats_url, **options).open()

    async def open(self) -> Self:
        if self._nc is None:
            self._nc = await nats.connect(servers=self._servers, **self._options)
        return self

    async def close(self) -> None:
        """Close the connection this client opened (a connection it was given stays open)."""
        nc, self._nc = self._nc, None
        if nc is not None and nc is not self._given:
            await nc.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def nc(self) -> Client:
        """The NATS connection."""
        if self._nc is None:
            raise LedgerClientError("the client is not open: use `async with` or `await client.open()`")
        return self._nc

    async def _ask(self, subject: str, session_id: str, **options: int | None) -> dict[str, Any]:
        """A session query's answer; `options` as the request body names them."""
        subject = subject.format(session_id=_checked_session(session_id))
        reply = await self.nc.request(subject, _options(**options), timeout=self.timeout)
        return _answer(reply.data)

    async def count(
        self,
        session_id: str,
        *,
        at: int | None = None,
        as_of: int | None = None,
        min_position: int | None = None,
    ) -> Count:
        """The session's count now, or as of position `at`, or as of the time `as_of` (ms since
        the epoch, compared with `recordedAt`); `min_position` waits for the ledger to reach it
        first. An `at` beyond the head raises `LedgerRequestError` naming `at`."""
        return _count(await self._ask(SESSION_COUNT, session_id, at=at, asOf=as_of, minPosition=min_position))

    async def connections(
        self,
        session_id: str,
        *,
        at: int | None = None,
        as_of: int | None = None,
        min_position: int | None = None,
    ) -> Connections:
        """The session's live connections, now or as of `at` / `as_of` (as for `count`)."""
        answer = await self._ask(SESSION_CONNECTIONS, session_id, at=at, asOf=as_of, minPosition=min_position)
        return _connections(answer)

    async def usage(
        self,
        session_id: str,
        *,
        from_: int | None = None,
        to: int | None = None,
        min_position: int | None = None,
    ) -> Usage:
        """The session's usage over `[from_, to)`, ms of event time (by default its whole life
        up to now). `from_` after `to` raises `LedgerRequestError` naming `from`."""
        window = {"from": from_, "to": to}
        return _usage(await self._ask(SESSION_USAGE, session_id, **window, minPosition=min_position))

    async def head(self) -> int:
        """The ledger's head position, as the service answering knows it."""
        return (await self.count(HEAD_PROBE_SESSION)).position

    async def replay(
        self,
        session_id: str | None = None,
        *,
        after: int = 0,
        limit: int | None = None,
        page: int = REPLAY_PAGE,
    ) -> AsyncGenerator[Record, None]:
        """The records after position `after`, of one session or all, in position order, at
        most `limit`: read `page` records a request, so that memory stays constant whatever the
        range. A refused or cut-short replay raises `ReplayError` (`.last`: the last position
        sent before it)."""
        if session_id is not None:
            _checked_session(session_id)
        if page < 1:
            raise ValueError("page must be at least 1")
        left = limit
        while left is None or left > 0:
            size = page if left is None else min(page, left)
            records, last = await self._replay_page(session_id, after, size)
            for record in records:
                yield record
            if left is not None:
                left -= len(records)
            if len(records) < size:
                return
            after = last

    async def _replay_page(self, session_id: str | None, after: int, limit: int) -> tuple[list[Record], int]:
        """One `ledger.replay` request: its records and the end marker's last position."""
        request: dict[str, Any] = {"after": after, "limit": limit}
        if session_id is not None:
            request["sessionId"] = session_id
        nc = self.nc
        inbox = nc.new_inbox()
        subscription = await nc.subscribe(inbox)
        records: list[Record] = []
        refused: LedgerRequestError | None = None
        try:
            await nc.publish(REPLAY, orjson.dumps(request), reply=inbox)
            while True:
                message = await subscription.next_msg(timeout=self.timeout)
                headers = message.headers or {}
                if HEADER_REPLAY_END in headers:
                    last = int(headers[HEADER_REPLAY_END])
                    if HEADER_REPLAY_ERROR in headers:
                        code = headers[HEADER_REPLAY_ERROR]
                        if refused is not None:
                            raise ReplayError(refused.error, refused.message, refused.field, last)
                        raise ReplayError(code, f"the replay stopped after position {last}", None, last)
                    return records, last
                document = orjson.loads(message.data)
                refused = _refusal(document)
                if refused is None:
                    records.append(Record.from_json(document))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    def watch(self, session_id: str | None = None, *, after: int | None = None) -> Watch:
        """A session's snapshot, then every record after it, live (see `Watch`); with
        `session_id` None, every session's records. `after` resumes a watch: the records after
        that position, with no snapshot."""
        if session_id is not None:
            _checked_session(session_id)
        return Watch(self, session_id, after)


class _Resume(Exception):
    """The watch's consumer cannot be trusted to go on (a reconnect): make it again."""


# What a watch rides out, resuming from its last position: NATS reconnecting, a consumer or a
# stream leader gone, the service restarting (no responders), a replay refused for now.
_RESUMABLE = (nats.errors.Error, TimeoutError, _Resume)


class Watch:
    """An async iterator: a session's `Connections` as of a position P (the snapshot), then
    every `Record` of the session after P in position order, as the ledger appends them; with
    no session, every record after the head (or after `after`). It never ends by itself:
    `aclose()` it (or leave an `async with` on it) when done.

    How. The records come from the LEDGER stream through an ephemeral pull consumer of this
    watch, made to start at the stream sequence of the first record after the last position
    yielded (a binary search of the stream by the records' positions), filtered to the session.
    Each record is checked against the last one yielded: one at or before it is dropped (the
    relay may publish a record twice across a crash); one that does not follow it (for every
    session, position + 1; for one session, its `sequence` + 1, or, when that is not known yet,
    the global position + 1) is preceded by what `ledger.replay` has between the two, so that
    a record not in the stream (dropped by its limits, or lost in flight) is still yielded, once.
    After a reconnect, an error, or the consumer gone (a server restarted, a NATS node dead),
    the consumer is made again from the last position yielded, after a short pause. Nothing
    yielded is kept: memory is one batch of the stream or one page of a replay, whatever the
    length of the history.

    `position` is the last position yielded (the snapshot's P at first): pass it as `after` to
    resume a watch in another process. `resumes` counts the times it resumed."""

    def __init__(self, client: LedgerClient, session_id: str | None, after: int | None) -> None:
        self.client = client
        self.session_id = session_id
        self.position: int | None = after
        self.resumes = 0
        # The session's sequence of the last record yielded, when known.
        self._sequence: int | None = None
        self._items = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Connections | Record:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        await self._items.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Connections | Record, None]:
        failures = 0
        while self.position is None:
            try:
                if self.session_id is None:
                    self.position = await self.client.head()
                else:
                    snapshot = await self.client.connections(self.session_id)
                    self.position = snapshot.position
                    yield snapshot
            except (*_RESUMABLE, LedgerRequestError) as error:
                failures = await self._pause(error, failures)
        while True:
            try:
                async with aclosing(self._follow()) as records:
                    async for record in records:
                        failures = 0
                        yield record
            except (*_RESUMABLE, LedgerRequestError) as error:
                failures = await self._pause(error, failures)
                self.resumes += 1

    async def _pause(self, error: Exception, failures: int) -> int:
        """Wait before trying again, or raise what no retry can mend."""
        if isinstance(error, nats.errors.ConnectionClosedError) or self.client.nc.is_closed:
            raise LedgerClientError("the NATS connection is closed") from error
        if isinstance(error, LedgerRequestError) and not error.transient:
            raise error
        pause = RESUME_SECONDS[min(failures, len(RESUME_SECONDS) - 1)]
        log.info(
            "watch: %s: %s; resuming after position %s in %.2f s",
            type(error).__name__,
            error,
            self.position,
            pause,
        )
        await asyncio.sleep(pause)
        return failures + 1

    @property
    def _subject(self) -> str:
        return RECORDS_FILTER if self.session_id is None else record_subject(self.session_id, ">")

    async def _follow(self) -> AsyncGenerator[Record, None]:
        """The records after `position` from a consumer of the stream, until it fails."""
        nc = self.client.nc
        js = nc.jetstream(timeout=self.client.timeout)
        reconnects = nc.stats["reconnects"]
        name = f"ledger-watch-{uuid.uuid4().hex}"
        config = ConsumerConfig(
            name=name,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=await self._start_sequence(js),
            ack_policy=AckPolicy.NONE,
            filter_subject=self._subject,
            inactive_threshold=CONSUMER_INACTIVE_SECONDS,
            mem_storage=True,
            num_replicas=1,
        )
        await js.add_consumer(self.client.stream, config)
        subscription = await js.pull_subscribe_bind(consumer=name, stream=self.client.stream)
        try:
            while True:
                try:
                    messages = await subscription.fetch(WATCH_BATCH, timeout=FETCH_SECONDS)
                except nats.errors.TimeoutError:
                    messages = []
                for message in messages:
                    async for record in self._take(Record.from_json(orjson.loads(message.data))):
                        yield record
                if nc.stats["reconnects"] != reconnects:
                    # Records delivered while the connection was down are lost to it: the
                    # consumer is made again after the last position yielded.
                    raise _Resume("reconnected")
                if not messages:
                    await subscription.consumer_info()  # NotFoundError when it is gone
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            with contextlib.suppress(Exception):
                await nc.jetstream(timeout=1.0).delete_consumer(self.client.stream, name)

    async def _take(self, record: Record) -> AsyncGenerator[Record, None]:
        """`record`, preceded by the records missing before it; nothing when it is yielded already."""
        assert self.position is not None
        if record.position <= self.position:
            return
        if not self._follows(record):
            missing = self.client.replay(
                self.session_id, after=self.position, limit=record.position - self.position - 1
            )
            async with aclosing(missing) as earlier:
                async for before in earlier:
                    if before.position >= record.position:
                        break
                    self._yielded(before)
                    yield before
        self._yielded(record)
        yield record

    def _follows(self, record: Record) -> bool:
        """Whether nothing can be missing between the last record yielded and `record`."""
        assert self.position is not None
        if record.position == self.position + 1:
            return True
        return (
            self.session_id is not None
            and self._sequence is not None
            and record.sequence == self._sequence + 1
        )

    def _yielded(self, record: Record) -> None:
        self.position = record.position
        self._sequence = record.sequence

    async def _start_sequence(self, js: JetStreamContext) -> int:
        """The stream sequence of the first record after `position`: where the consumer starts
        (a sequence past the stream's end means the next record it stores)."""
        assert self.position is not None
        state = (await js.stream_info(self.client.stream)).state
        end = state.last_seq + 1
        if not state.messages:
            return end
        # Mostly a watch starts at the head: one look at the last record settles it.
        if await self._position_at(js, state.last_seq) <= self.position:
            return end
        low, high = state.first_seq, state.last_seq  # the answer is in [low, high]
        while low < high:
            middle = (low + high) // 2
            position = await self._position_at(js, middle)
            if position > self.position:
                high = middle
            else:
                low = middle + 1
        return low

    async def _position_at(self, js: JetStreamContext, sequence: int) -> int:
        """The position of the first record at or after `sequence` (a message deleted from the
        middle of the stream is passed over); -1 for a message that is not a record."""
        message = await js.get_msg(self.client.stream, seq=sequence, subject=RECORDS_FILTER, next=True)
        try:
            return int(orjson.loads(message.data or b"")["position"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return -1
