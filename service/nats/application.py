"""The NATS side of the service as a FastStream application, and its AsyncAPI document.

Two FastStream `NatsBroker`s own the service's two NATS connections, both built from the
settings (servers, user and password, token or credentials file, TLS: connect.py):

- `queries`: the request/reply subscribers (responders.py). It is the FastStream app's broker:
  the app starts it (its connection, then its subscribers, in the queue group) and stops it
  (requests in hand answered, then the connection drained).
- `stream`: ingest, the relay, `ledger.head` and `ledger.rejected.<code>`. Its connection is the
  one the hot paths use raw (the pull feed, batched acks, the relay's chained publisher; each
  module says why and by how much). It is connected, never started: the subscriber declared on
  it for the events in is served by the pull feed (ingest.py), and declared for the document.

Two connections, as before FastStream, because one nats-py connection reads in one task and
writes through one buffer: on the stream's connection a request would wait behind the stream's
deliveries and its answer behind a batch's acks.

The order of `start` is what the service promises: streams exist (with their limits) before
anyone is told "ready", and every subscription is on the server (a flush of each connection)
before `start` returns. `stop` runs after ingest drained (its acks queued on the stream
connection): requests in hand are answered, then the stream connection is flushed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Any

from faststream import FastStream
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.specification import AsyncAPI
from pydantic import WithJsonSchema

from service import schemas
from service.errors import RejectCode
from service.nats.connect import CALLBACKS, broker_security, probe, servers
from service.nats.head import follow_heads
from service.nats.responders import DRAIN_SECONDS, Answering, InlineCount, Responders, declare_responders
from service.nats.streams import ensure_streams
from service.settings import Settings
from service.subjects import (
    HEAD,
    HEADER_EXPECTED_LAST_MSG_ID,
    HEADER_MSG_ID,
    HEADER_RAW_TRUNCATED,
    HEADER_REJECT_CODE,
    HEADER_REJECT_MESSAGE,
    HEADER_SUBJECT,
    REJECTED,
    event_subject,
    record_subject,
)

__all__ = ["NatsEdge", "asyncapi_document"]

log = logging.getLogger(__name__)

TITLE = "Connection Ledger"
DESCRIPTION = "The authoritative, replayable record of who is connected to which realtime session."

Event = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "title": "Event",
            "oneOf": [
                {**schemas.NATIVE_EVENT, "title": "NativeEvent"},
                {**schemas.VONAGE_EVENT, "title": "VonageEvent"},
            ],
        }
    ),
]
Record = Annotated[dict[str, Any], WithJsonSchema({**schemas.RECORD, "title": "Record"})]
Head = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "title": "Head",
            "type": "object",
            "required": ["position"],
            "properties": {"position": {"type": "integer", "minimum": 1}},
        }
    ),
]
Original = Annotated[
    bytes,
    WithJsonSchema(
        {
            "title": "Rejected",
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "The original message, as received",
        }
    ),
]


def _broker(settings: Settings, url: str, name: str) -> NatsBroker:
    options: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        # Its lines are ours (connect.py); FastStream's own logger says nothing.
        "logger": None,
        "graceful_timeout": DRAIN_SECONDS,
        **CALLBACKS,
    }
    if not settings.nats_url:
        # The bundled nats-server's address, as the document shows it.
        options["specification_url"] = [f"nats://127.0.0.1:{settings.nats_port}"]
    return NatsBroker(servers(url), security=broker_security(settings), **options)


def _declare_stream_side(broker: NatsBroker, settings: Settings) -> None:
    """The stream connection's subjects, for the document: what it receives (the events, by
    the pull feed) and what it sends (records, rejections, heads, through raw nats-py)."""
    prefix = settings.subject_prefix

    @broker.subscriber(
        event_subject(prefix, "{sessionId}", "{type}"),
        stream=JStream(settings.connections_stream, declare=False),
        durable=settings.consumer_name,
        pull_sub=PullSub(batch_size=settings.batch_size),
        title="events",
        description=f"Events in, read from the JetStream stream {settings.connections_stream} by the "
        f"durable pull consumer {settings.consumer_name}. Publish with JetStream (a PubAck means "
        "durably received); do not set Nats-Msg-Id. type: connectionCreated or connectionDestroyed "
        "(a Vonage Session Monitoring callback is taken as it is POSTed); at most 64 KiB.",
    )
    async def events(event: Event) -> None:  # pragma: no cover - ingest.py's pull feed serves it
        raise RuntimeError("the events are read by the pull feed, never by this subscriber")

    broker.publisher(
        record_subject("{sessionId}", "{type}"),
        stream=JStream(settings.ledger_stream, declare=False),
        title="records",
        schema=Record,
        description=f"Every ledger record, in position order, on the JetStream stream "
        f"{settings.ledger_stream}. Headers: {HEADER_MSG_ID} (the event id); "
        f"{HEADER_EXPECTED_LAST_MSG_ID} (the event id of the record before it, when the relay "
        "published the two in one chained batch, absent otherwise: the stream stored it only "
        "after that one).",
    )
    broker.publisher(
        REJECTED,
        title="rejected",
        schema=Original,
        description="Core NATS: messages that could not be appended, the original bytes as the "
        f"body. code: one of {', '.join(code.value for code in RejectCode)}. Headers: "
        f"{HEADER_REJECT_CODE}, {HEADER_REJECT_MESSAGE}, {HEADER_SUBJECT}; {HEADER_RAW_TRUNCATED} "
        "only when the original would not fit beside the headers in the server's payload limit: its "
        "length in bytes (the body is then its beginning; the whole is stored: GET /v1/rejected).",
    )
    broker.publisher(
        HEAD,
        title="head",
        schema=Head,
        description="Core NATS, at most once: the ledger's head position after each commit that "
        "appended records, from whichever instance committed. A hint to read the ledger now "
        "(the relay and other instances' counts wake on it), never a record itself.",
    )


class _Unanswered:
    """The answers of a document's broker, which is never started."""

    async def count(self, *_: Any) -> bytes:
        raise RuntimeError("not serving")

    connections = usage = count

    async def replay(self, *_: Any) -> None:
        raise RuntimeError("not serving")

    refuse_replay = replay


class NatsEdge:
    """The two brokers and the FastStream app that runs the queries broker (module docstring)."""

    def __init__(self, settings: Settings, url: str, answering: Answering | None = None) -> None:
        self.settings = settings
        self.url = url
        self.stream = _broker(settings, url, "connection-ledger")
        self.queries = _broker(settings, url, "connection-ledger-queries")
        _declare_stream_side(self.stream, settings)
        self.specification = AsyncAPI(
            self.queries,
            self.stream,
            title=TITLE,
            version="1",
            description=DESCRIPTION,
        )
        self._on_head: Callable[[int], None] | None = None
        self._inline: InlineCount | None = None
        self.app = FastStream(
            self.queries,
            logger=None,
            specification=self.specification,
            on_startup=[self._open_stream_side],
            after_startup=[self._listen_and_flush],
        )
        if answering is not None:
            self.answer_with(answering)

    def answer_with(self, answering: Answering) -> None:
        count = declare_responders(self.queries, answering)
        if isinstance(answering, Responders):
            # Plain counts answered in the subscription's callback (responders.py says why).
            self._inline = InlineCount(count, answering.counts)

    def document(self) -> dict[str, Any]:
        """The AsyncAPI document FastStream generates from the brokers' declarations."""
        document: dict[str, Any] = self.specification.to_specification().to_jsonable()
        return document

    async def start(self, on_head: Callable[[int], None]) -> None:
        """Connect, make sure of the streams, subscribe, flush (the module docstring's order);
        `on_head(position)` for each ledger.head announcement."""
        self._on_head = on_head
        await self.app.start()

    async def _open_stream_side(self) -> None:
        # A wrong URL or secret is one clear error, not nats-py retrying forever.
        await probe(self.settings, self.url)
        await self.stream.connect()
        # Streams exist, with their limits, before anyone is told "ready": an early JetStream
        # publish would otherwise find no stream to take it.
        await ensure_streams(self.stream.connection, self.settings)
        if self._inline is not None:
            # Before the app starts the broker's subscribers: the count subscriber keeps it.
            await self.queries.connect()
            await self._inline.install(self.queries.connection)

    async def _listen_and_flush(self) -> None:
        if self._on_head is not None:
            await follow_heads(self.stream.connection, self._on_head)  # other instances' commits
        # Subscriptions are on the server before we say "ready".
        await self.stream.connection.flush()
        await self.queries.connection.flush()

    async def stop(self) -> None:
        """Answer the requests in hand (up to DRAIN_SECONDS) and drain the queries connection,
        then flush the stream connection's acks and close it. With the server gone there is
        nothing to drain or flush: each step gives up rather than wait out its timeout."""
        queries = self._client(self.queries)
        stream = self._client(self.stream)
        try:
            await asyncio.wait_for(self.app.stop(), DRAIN_SECONDS + 2)
        except Exception as error:  # the server gone, most likely
            log.debug("stopping the responders: %s", error)
        for client in (queries, stream):
            if client is None:
                continue
            if client is stream and client.is_connected:
                # Acks are already queued; flush them out before closing.
                with contextlib.suppress(Exception):
                    await client.flush(timeout=2)
            with contextlib.suppress(Exception):
                await client.close()

    @staticmethod
    def _client(broker: NatsBroker) -> Any:
        try:
            return broker.connection
        except Exception:
            return None


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI document of the service's NATS interface, generated by FastStream from the
    brokers as `serve` declares them (built, never connected)."""
    url = settings.nats_url or f"nats://127.0.0.1:{settings.nats_port}"
    return NatsEdge(settings, url, _Unanswered()).document()
