"""The HTTP API on every backend (CONTRACT sections 1 HTTP, 4, 6, 7): each route and each 4xx.

Writes go through a publisher that hands the accepted bodies straight to the pipeline, as the
NATS ingest would (the NATS path itself is covered end to end)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import httpx
import orjson
import pytest

from service.app.bootstrap import follow_counts, open_ledger
from service.commit_signal import CommitSignal
from service.http.app import HttpContext, create_app
from service.http.server import HttpServer
from service.inbound import Incoming
from service.ledger.database import create_engine
from service.ledger.records import record_json
from service.pipeline.ledger_service import LedgerService
from service.pipeline.live_counts import LiveCounts
from service.settings import Settings
from tests.helpers import CREATED, DESTROYED, body, stalled_http_reader


class DirectPublisher:
    """Publishes into the pipeline itself, with the subject NATS would carry."""

    def __init__(self, ledger: LedgerService, committed: CommitSignal) -> None:
        self.ledger = ledger
        self.committed = committed
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self.published.extend(messages)
        await self.ledger.pipeline.process([Incoming(raw, 0, "nats", subject) for subject, raw in messages])
        self.committed.ring()


# Every write is JSON; the client says so whatever the test sends.
JSON_BODY = {"Content-Type": "application/json"}


async def _ready() -> dict[str, str | None]:
    return {"nats": None, "database": None, "consumer": None, "streams": None}


def _asyncapi() -> dict[str, Any]:
    return {"asyncapi": "3.0.0"}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, LedgerService, DirectPublisher]]:
    async with open_ledger(settings) as ledger, follow_counts(ledger) as counts:
        committed = CommitSignal()
        publisher = DirectPublisher(ledger, committed)
        app = create_app(HttpContext(ledger, committed, counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=JSON_BODY
        ) as client:
            yield client, ledger, publisher


def native(event_id: str, **kw: Any) -> dict[str, Any]:
    return body(event_id, **kw)


async def test_post_one_event_then_query_it(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, _, publisher = api
    response = await client.post(
        "/v1/events", content=orjson.dumps(native("e1", session="S", connection="a"))
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    assert publisher.published[0][0] == "connections.S.connectionCreated"
    assert (await client.get("/v1/sessions/S/count")).json() == {"sessionId": "S", "count": 1, "position": 1}
    assert (await client.get("/v1/sessions/S")).json() == {
        "sessionId": "S",
        "count": 1,
        "position": 1,
        "connections": [{"connectionId": "a", "creationTime": 1_732_699_990_000, "data": "name=Ana"}],
    }
    assert (await client.get("/v1/sessions/nobody/count")).json() == {
        "sessionId": "nobody",
        "count": 0,
        "position": 1,
    }


async def test_post_an_array_is_all_or_nothing(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, _, publisher = api
    good = [native(f"e{i}", connection=f"c{i}") for i in range(3)]
    response = await client.post("/v1/events", json=good)
    assert response.status_code == 202
    assert response.json() == {"accepted": 3}
    bad = [native("e9", connection="x"), {**native("e10"), "timestamp": "soon"}]
    response = await client.post("/v1/events", json=bad)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_field"
    # The contract's field name, and which element broke it.
    assert response.json()["field"] == "timestamp"
    assert response.json()["index"] == 1
    assert response.json()["message"].startswith("event [1]: ")
    assert len(publisher.published) == 3
    assert (await client.get("/v1/sessions/s1/count")).json()["count"] == 3


@pytest.mark.parametrize(
    ("content", "status", "code", "field"),
    [
        (b"{not json", 400, "malformed_json", None),
        (b"[]", 400, "invalid_field", None),
        (b'{"type": "connectionCreated"}', 422, "invalid_field", "id"),
        (orjson.dumps({**body("e1"), "type": "streamCreated"}), 422, "unknown_type", "type"),
        (orjson.dumps({**body("e1"), "sessionId": "a.b"}), 422, "invalid_field", "sessionId"),
        (orjson.dumps({"sessionId": "s", "event": "connectionCreated"}), 422, "invalid_field", "type"),
        (b'{"pad": "' + b"x" * 70_000 + b'", "type": "connectionCreated"}', 413, "too_large", None),
        # Size is checked first: a large body is too large, whatever else is wrong with it.
        (b'{"pad": "' + b"x" * 70_000 + b'"}', 413, "too_large", None),
        (b'{"pad": "' + b"x" * 70_000, 413, "too_large", None),
        # An element of an array, too: size before its missing type.
        (orjson.dumps([body("e1"), {"pad": "x" * 70_000}]), 413, "too_large", None),
        (orjson.dumps([body(f"e{i}", connection=f"c{i}") for i in range(1001)]), 413, "too_large", None),
        (b"3", 422, "invalid_field", None),
    ],
)
async def test_post_events_errors(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
    content: bytes,
    status: int,
    code: str,
    field: str | None,
) -> None:
    client, _, publisher = api
    response = await client.post("/v1/events", content=content)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"] == code
    assert answer["field"] == field
    assert answer["message"]
    assert publisher.published == []


VONAGE = {
    "sessionId": "2_MX40fg",
    "projectId": "123",
    "event": "connectionCreated",
    "timestamp": 1_470_258_860_571,
    "connection": {"id": "vc1", "createdAt": 1_470_257_688_143, "data": "TOKENDATA"},
}


async def test_a_vonage_callback_retried_three_times_is_one_record(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, _, _ = api
    for _ in range(3):
        response = await client.post("/v1/callbacks/vonage", json=VONAGE)
        assert response.status_code == 202
        assert response.json() == {"accepted": 1}
    lines = (await client.get("/v1/events")).text.splitlines()
    assert len(lines) == 1
    assert orjson.loads(lines[0])["connection"] == {
        "connectionId": "vc1",
        "creationTime": 1_470_257_688_143,
        "data": "TOKENDATA",
    }
    ignored = await client.post("/v1/callbacks/vonage", json={**VONAGE, "event": "streamCreated"})
    assert (ignored.status_code, ignored.json()) == (202, {"accepted": 0})
    assert "ledger_events_ignored_total 1.0" in (await client.get("/metrics")).text
    bad = await client.post("/v1/callbacks/vonage", json={**VONAGE, "timestamp": "x"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "timestamp"
    missing = await client.post("/v1/callbacks/vonage", json={"sessionId": "s"})
    assert (missing.status_code, missing.json()["field"]) == (422, "event")


async def test_sessions_listing_pages(api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher]) -> None:
    client, _, _ = api
    await client.post("/v1/events", json=[native(f"e{i}", session=f"S{i}") for i in range(5)])
    await client.post("/v1/events", json=[native("gone", session="S2", type_="connectionDestroyed")])
    first = (await client.get("/v1/sessions", params={"limit": 2})).json()
    assert first["sessions"] == [{"sessionId": "S0", "count": 1}, {"sessionId": "S1", "count": 1}]
    second = (await client.get("/v1/sessions", params={"limit": 2, "cursor": first["next"]})).json()
    assert second == {
        "sessions": [{"sessionId": "S3", "count": 1}, {"sessionId": "S4", "count": 1}],
        "next": None,
    }
    everything = (await client.get("/v1/sessions", params={"active": "false"})).json()
    assert {"sessionId": "S2", "count": 0} in everything["sessions"]
    assert len(everything["sessions"]) == 5
    bad = await client.get("/v1/sessions", params={"cursor": "!!!"})
    assert (bad.status_code, bad.json()["field"]) == (422, "cursor")
    bad = await client.get("/v1/sessions", params={"limit": 0})
    assert (bad.status_code, bad.json()["field"]) == (422, "limit")
    # Parameters sent empty, as a URL template leaves them, are the defaults.
    blank = await client.get("/v1/sessions?active=true&limit=&cursor=")
    assert blank.status_code == 200
    assert len(blank.json()["sessions"]) == 4


async def test_a_sessions_page_larger_than_the_most_is_cut_not_refused(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, _, _ = api
    for start in (0, 1000):
        batch = [native(f"e{i}", session=f"S{i:05}") for i in range(start, min(start + 1000, 1001))]
        assert (await client.post("/v1/events", json=batch)).status_code == 202
    first = (await client.get("/v1/sessions", params={"limit": 5000})).json()
    assert len(first["sessions"]) == 1000
    assert first["next"] is not None
    rest = (await client.get("/v1/sessions", params={"limit": 5000, "cursor": first["next"]})).json()
    assert rest == {"sessions": [{"sessionId": "S01000", "count": 1}], "next": None}


async def test_events_and_rejected_stream_ndjson(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, ledger, _ = api
    await client.post(
        "/v1/events", json=[native(f"e{i}", session="AB"[i % 2], connection=f"c{i}") for i in range(6)]
    )
    await ledger.pipeline.process([Incoming(b"{broken", 5, "nats", "connections.x.connectionCreated")])
    response = await client.get("/v1/events", params={"after": 2})
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert [orjson.loads(line)["position"] for line in response.text.splitlines()] == [3, 4, 5, 6]
    response = await client.get("/v1/events", params={"sessionId": "B", "limit": 2})
    assert [orjson.loads(line)["position"] for line in response.text.splitlines()] == [2, 4]
    rejected = [orjson.loads(line) for line in (await client.get("/v1/rejected")).text.splitlines()]
    assert [r["code"] for r in rejected] == ["malformed_json"]
    assert base64.b64decode(rejected[0]["raw"]) == b"{broken"
    assert (await client.get("/v1/rejected", params={"after": rejected[0]["id"]})).text == ""
    blank = await client.get("/v1/events?sessionId=&after=&limit=")
    assert [orjson.loads(line)["position"] for line in blank.text.splitlines()] == [1, 2, 3, 4, 5, 6]
    assert (await client.get("/v1/sessions/A/count?minPosition=")).json()["count"] == 3
    bad = await client.get("/v1/events", params={"after": "x"})
    assert (bad.status_code, bad.json()["field"]) == (422, "after")
    bad = await client.get("/v1/events", params={"sessionId": "a b"})
    assert (bad.status_code, bad.json()["field"]) == (422, "sessionId")


async def test_events_are_exactly_the_records_json_however_sliced(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, ledger, _ = api
    quoted = 'q"x\\y \u00e9'
    created = [
        native(f"e{i}", session="AB"[i % 2], connection=f"c{i}", data=None if i % 3 else quoted)
        for i in range(40)
    ]
    gone = [body(f"d{i}", DESTROYED, "AB"[i % 2], f"c{i}") for i in range(10)]
    # A platform's source and its own reason, quoted and accented, are encoded alike too.
    gone[1::3] = [{**event, "source": "livekit", "vendorReason": quoted} for event in gone[1::3]]
    await client.post("/v1/events", json=created)
    await client.post("/v1/events", json=gone)
    async with aclosing(ledger.store.records()) as pages:
        expected = [record_json(row) async for rows in pages for row in rows]
    assert len(expected) == 50

    async def lines(**params: Any) -> list[bytes]:
        return (await client.get("/v1/events", params=params)).content.splitlines()

    # The route's lines are encoded by the database; they must be the very bytes of record_json.
    assert await lines() == expected
    assert await lines(after=7, limit=11) == expected[7:18]
    in_b = [line for line in expected[5:] if orjson.loads(line)["sessionId"] == "B"]
    assert await lines(sessionId="B", after=5) == in_b


async def test_min_position_waits_then_answers_with_what_it_has(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher], settings: Settings
) -> None:
    client, _, _ = api
    await client.post("/v1/events", json=[native("e1")])
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = (await client.get("/v1/sessions/s1/count", params={"minPosition": 1})).json()
    assert answer["position"] == 1
    assert loop.time() - started < 1
    # Not there yet: the answer waits (LEDGER_MIN_POSITION_WAIT), then says how far it got.
    answer = (await client.get("/v1/sessions/s1/count", params={"minPosition": 50})).json()
    assert answer == {"sessionId": "s1", "count": 1, "position": 1}
    assert loop.time() - started >= settings.min_position_wait * 0.9


async def test_count_answers_alike_on_the_fast_path_and_the_route(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, _, _ = api
    await client.post("/v1/events", json=[native("e1", session="a:b=c~d"), native("e2", session="a:b=c~d")])
    want = {"sessionId": "a:b=c~d", "count": 1, "position": 2}
    # Plain requests are answered from memory at the ASGI layer ...
    assert (await client.get("/v1/sessions/a:b=c~d/count")).json() == want
    assert (await client.get("/v1/sessions/a%3Ab%3Dc~d/count")).json() == want
    assert (await client.get("/v1/sessions/a:b=c~d/count?minPosition=2")).json() == want
    # ... anything else by the FastAPI route, with the same answer and the contract's errors.
    routed = await client.get("/v1/sessions/a:b=c~d/count?minPosition=2&pretty=1")
    assert (routed.status_code, routed.json()) == (200, want)
    bad = await client.get("/v1/sessions/s1/count?minPosition=-1")
    assert (bad.status_code, bad.json()["field"]) == (422, "minPosition")
    bad = await client.get("/v1/sessions/s1/count?minPosition=x")
    assert (bad.status_code, bad.json()["field"]) == (422, "minPosition")
    bad = await client.get("/v1/sessions/a%20b/count")
    assert (bad.status_code, bad.json()["field"]) == (422, "sessionId")
    assert (await client.post("/v1/sessions/s1/count")).status_code == 405


async def test_min_position_holds_every_query_until_the_position_commits(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, _, publisher = api
    waiting = [
        asyncio.create_task(client.get("/v1/sessions/s1", params={"minPosition": 2})),
        asyncio.create_task(client.get("/v1/sessions", params={"minPosition": 2})),
        asyncio.create_task(client.get("/v1/sessions/s1/count", params={"minPosition": 2})),
    ]
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in waiting)
    await publisher.publish(
        [(f"connections.s1.{CREATED}", orjson.dumps(native(f"e{i}", connection=f"c{i}"))) for i in range(2)]
    )
    connections, sessions, count = [(await task).json() for task in waiting]
    assert (connections["position"], connections["count"], len(connections["connections"])) == (2, 2, 2)
    assert sessions["sessions"] == [{"sessionId": "s1", "count": 2}]
    assert (count["position"], count["count"]) == (2, 2)


async def test_health_and_metrics(api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher]) -> None:
    client, _, _ = api
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json()["ready"] is True
    await client.post("/v1/events", json=[native("e1"), native("e1")])
    text = (await client.get("/metrics")).text
    assert "ledger_events_appended_total 1.0" in text
    assert "ledger_events_duplicate_total 1.0" in text
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/events", "/v1/callbacks/vonage", "/v1/sessions/{session_id}", "/v1/sessions"} <= set(
        spec["paths"]
    )
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/docs/asyncapi")).json() == _asyncapi()
    page = await client.get("/")
    assert page.status_code == 200
    assert "/static/dashboard.js" in page.text
    assert (await client.get("/static/dashboard.js")).status_code == 200


async def test_a_token_guards_writes_and_optionally_reads(settings: Settings) -> None:
    guarded = settings.model_copy(update={"http_token": "t0ken", "http_token_for_reads": True})
    async with open_ledger(guarded) as ledger, follow_counts(ledger) as counts:
        committed = CommitSignal()
        publisher = DirectPublisher(ledger, committed)
        app = create_app(HttpContext(ledger, committed, counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client:
            denied = await client.post("/v1/events", json=native("e1"))
            assert denied.status_code == 401
            assert denied.json()["field"] == "Authorization"
            assert (await client.get("/v1/sessions/s1/count")).status_code == 401
            assert (await client.get("/healthz")).status_code == 200
            auth = {"Authorization": "Bearer t0ken"}
            assert (await client.post("/v1/events", json=native("e1"), headers=auth)).status_code == 202
            assert (await client.get("/v1/sessions/s1/count", headers=auth)).json()["count"] == 1


@pytest.fixture
async def live_server(settings: Settings) -> AsyncIterator[tuple[str, LedgerService, DirectPublisher]]:
    """A real uvicorn on an ephemeral port: SSE needs a streaming client."""
    async with (
        open_ledger(settings.model_copy(update={"http_port": 0})) as ledger,
        follow_counts(ledger) as counts,
    ):
        committed = CommitSignal()
        publisher = DirectPublisher(ledger, committed)
        app = create_app(HttpContext(ledger, committed, counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
        server = HttpServer(app, ledger.settings)
        task = asyncio.create_task(server.run())
        await server.started.wait()
        try:
            yield server.url, ledger, publisher
        finally:
            server.stop()
            await asyncio.wait_for(task, 10)


async def read_sse(response: httpx.Response, until: int) -> AsyncIterator[dict[str, Any]]:
    fields: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield fields
                fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = orjson.loads(value) if name == "data" else value


async def test_sse_hands_off_from_snapshot_to_live_with_no_gap_and_no_duplicate(
    live_server: tuple[str, LedgerService, DirectPublisher],
) -> None:
    url, ledger, publisher = live_server
    await publisher.publish(
        [
            (
                "connections.S.connectionCreated",
                orjson.dumps(native(f"pre{i}", session="S", connection=f"p{i}")),
            )
            for i in range(20)
        ]
    )

    async def append_while_streaming() -> None:
        for i in range(60):
            kind = "connectionDestroyed" if i % 3 == 2 else "connectionCreated"
            target = f"p{i}" if kind == "connectionDestroyed" else f"n{i}"
            await publisher.publish(
                [
                    (
                        f"connections.S.{kind}",
                        orjson.dumps(native(f"live{i}", session="S", connection=target, type_=kind)),
                    )
                ]
            )
            await publisher.publish(
                [
                    (
                        "connections.T.connectionCreated",
                        orjson.dumps(native(f"other{i}", session="T", connection=f"t{i}")),
                    )
                ]
            )
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(append_while_streaming())
    live: set[str] = set()
    tombstones: set[str] = set()
    positions: list[int] = []
    snapshot_position = -1
    async with (
        asyncio.timeout(60),
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", f"{url}/v1/sessions/S/stream") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = read_sse(response, 0)
        while True:
            try:
                message = await asyncio.wait_for(anext(messages), 1.0)
            except TimeoutError:
                # Quiet for a second: done once the writer is and the last record arrived.
                if (
                    writer.done()
                    and positions
                    and positions[-1] == (await session_positions(ledger, "S"))[-1]
                ):
                    break
                continue
            data = message["data"]
            if message.get("event") == "sessionConnected":
                snapshot_position = data["position"]
                assert data["count"] == len(live)
            elif data.get("snapshot"):
                assert "id" not in message
                live.add(data["connection"]["connectionId"])
            else:
                assert int(message["id"]) == data["position"] > snapshot_position >= 0
                assert message["event"] == data["type"]
                positions.append(data["position"])
                # Fold the record into the view built from the snapshot, as a client does
                # (CONTRACT 2.5), and hold the record's own count to it.
                connection = data["connection"]["connectionId"]
                if not data["defaultPrevented"]:
                    if data["type"] == "connectionDestroyed":
                        live.discard(connection)
                        tombstones.add(connection)
                    elif connection not in tombstones:
                        live.add(connection)
                assert data["count"] == len(live), data
    await writer
    # Every position of the session after the snapshot, exactly once, and the view is the projection.
    expected = [p for p in await session_positions(ledger, "S") if p > snapshot_position]
    assert positions == expected
    answer = await ledger.queries.connections("S")
    assert live == {c["connectionId"] for c in answer["connections"]}


async def session_positions(ledger: LedgerService, session: str) -> list[int]:
    out: list[int] = []
    async for rows in ledger.store.records(session_id=session):
        out.extend(r[0] for r in rows)
    return out


async def test_sse_resumes_after_last_event_id_without_a_snapshot(
    live_server: tuple[str, LedgerService, DirectPublisher],
) -> None:
    url, _, publisher = live_server
    await publisher.publish(
        [
            (
                "connections.S.connectionCreated",
                orjson.dumps(native(f"e{i}", session="S", connection=f"c{i}")),
            )
            for i in range(5)
        ]
    )
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", f"{url}/v1/sessions/S/stream", headers={"Last-Event-ID": "3"}) as response,
    ):
        got = []
        async for message in read_sse(response, 0):
            got.append(message)
            if len(got) == 2:
                break
    assert [m["event"] for m in got] == ["connectionCreated", "connectionCreated"]
    assert [m["id"] for m in got] == ["4", "5"]
    assert not any(m["data"].get("snapshot") for m in got)


async def _fill(publisher: DirectPublisher, events: int, session: str = "big") -> None:
    for start in range(0, events, 5000):
        await publisher.publish(
            [
                (
                    f"connections.{session}.connectionCreated",
                    orjson.dumps(native(f"{session}-{n}", session=session, connection=f"c{n}")),
                )
                for n in range(start, min(start + 5000, events))
            ]
        )


@pytest.fixture
def few_readers(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_streaming_readers": 2, "stream_stall_timeout": 5})


@pytest.mark.parametrize("path", ["/v1/events", "/v1/sessions/big/stream"])
async def test_readers_who_stall_hold_back_neither_writes_nor_other_readers(
    few_readers: Settings, path: str
) -> None:
    async with (
        open_ledger(few_readers.model_copy(update={"http_port": 0})) as ledger,
        follow_counts(ledger) as counts,
    ):
        committed = CommitSignal()
        publisher = DirectPublisher(ledger, committed)
        app = create_app(HttpContext(ledger, committed, counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
        server = HttpServer(app, ledger.settings)
        task = asyncio.create_task(server.run())
        await server.started.wait()
        stalled: list[socket.socket] = []
        try:
            await _fill(publisher, 30_000)
            stalled = [stalled_http_reader(server.url, path) for _ in range(2)]
            async with asyncio.timeout(10):
                while ledger.streaming.active < 2:
                    await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                # Past the cap: refused at once, with a hint to come back, on every streaming route.
                for refused_path in ("/v1/events", "/v1/rejected", "/v1/sessions/big/stream"):
                    refused = await client.get(refused_path)
                    assert refused.status_code == 503, refused_path
                    assert refused.headers["Retry-After"] == "2"
                    assert refused.json()["error"] == "busy"
                    assert "LEDGER_MAX_STREAMING_READERS" in refused.json()["message"]
                # Writes and queries go on meanwhile: no database connection is held by a stall.
                await _fill(publisher, 2_000, session="other")
                assert (await client.get("/v1/sessions/other/count")).json()["count"] == 2_000
                assert (await client.get("/v1/sessions/other")).json()["count"] == 2_000
                # The stalled clients are dropped after the stall timeout; their places come back.
                async with asyncio.timeout(15):
                    while ledger.streaming.active:
                        await asyncio.sleep(0.05)
            # A connection of its own: the server may have closed the one above as idle (its
            # keep-alive timeout) while the stalled readers were being dropped.
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                whole = await client.get("/v1/events")
                assert whole.status_code == 200
                assert len(whole.content.splitlines()) == 32_000
        finally:
            for reader in stalled:
                reader.close()
            server.stop()
            await asyncio.wait_for(task, 10)
        assert ledger.streaming.active == 0


async def test_a_stream_that_cannot_get_a_database_connection_is_a_503(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher], settings: Settings
) -> None:
    _, ledger, publisher = api
    await _fill(publisher, 10)
    readers = create_engine(settings.resolved_database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    starved = dataclasses.replace(ledger, store=type(ledger.store)(ledger.store.engine, readers))
    counts = LiveCounts(ledger.store.engine, poll_interval=1)
    app = create_app(HttpContext(starved, CommitSignal(), counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
    taken = await readers.connect()  # every reader connection is busy
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client:
            for path in ("/v1/events", "/v1/rejected", "/v1/events?sessionId=big"):
                answer = await client.get(path)
                assert answer.status_code == 503, path
                assert answer.json()["error"] == "unavailable"
                assert answer.headers["Retry-After"] == "2"
            assert starved.streaming.active == 0
            await taken.close()
            assert len((await client.get("/v1/events")).content.splitlines()) == 10
    finally:
        await taken.close()
        await readers.dispose()


async def asgi_request(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: list[bytes] | None = None,
    *,
    unfinished: bool = False,
) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """One request straight into the ASGI app, with headers exactly as given (a client library
    would refuse or fix the odd ones). Returns the status, headers, body, and how many body
    chunks the app read."""
    chunks = list(body or [])
    taken = 0
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }

    async def receive() -> dict[str, Any]:
        nonlocal taken
        if taken < len(chunks):
            taken += 1
            more = unfinished or taken < len(chunks)
            return {"type": "http.request", "body": chunks[taken - 1], "more_body": more}
        if not chunks and taken == 0:
            taken = -1
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status = 0
    answer_headers: dict[bytes, bytes] = {}
    answer = b""

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, answer_headers, answer
        if message["type"] == "http.response.start":
            status = message["status"]
            answer_headers = dict(message["headers"])
        else:
            answer += message.get("body", b"")

    await app(scope, receive, send)
    return status, answer_headers, answer, max(taken, 0)


LOCAL = (b"host", b"127.0.0.1:8080")
JSON = (b"content-type", b"application/json")


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "field"),
    [
        ("GET", "/v1/sessions/S/stream", [LOCAL, (b"last-event-id", "²".encode())], 422, "Last-Event-ID"),
        (
            "GET",
            "/v1/sessions/S/stream",
            [LOCAL, (b"last-event-id", b"9223372036854775808")],
            422,
            "Last-Event-ID",
        ),
        ("POST", "/v1/events", [LOCAL, JSON, (b"content-length", "²".encode())], 400, "Content-Length"),
        ("POST", "/v1/events", [LOCAL, JSON, (b"content-length", b"-1")], 400, "Content-Length"),
        ("POST", "/v1/events", [LOCAL, JSON, (b"content-length", b"9" * 5000)], 413, None),
        ("GET", "/v1/events?after=9223372036854775808", [LOCAL], 422, "after"),
        ("GET", "/v1/events?limit=99999999999999999999", [LOCAL], 422, "limit"),
        ("GET", "/v1/rejected?after=18446744073709551615", [LOCAL], 422, "after"),
        ("GET", "/v1/sessions/S?minPosition=9223372036854775808", [LOCAL], 422, "minPosition"),
        ("GET", "/v1/sessions/S/count?minPosition=9223372036854775808", [LOCAL], 422, "minPosition"),
        ("GET", "/v1/sessions?cursor=AA", [LOCAL], 422, "cursor"),
        ("GET", "/v1/sessions?cursor=%C3%A9", [LOCAL], 422, "cursor"),
        ("POST", "/v1/events", [LOCAL, (b"content-type", b"text/plain")], 415, "Content-Type"),
        ("POST", "/v1/events", [LOCAL], 415, "Content-Type"),
        (
            "POST",
            "/v1/callbacks/vonage",
            [LOCAL, (b"content-type", b"application/x-www-form-urlencoded")],
            415,
            "Content-Type",
        ),
        ("GET", "/v1/sessions/S/count", [(b"host", b"attacker.example")], 400, "Host"),
        ("POST", "/v1/events", [(b"host", b"rebound.example:8080"), JSON], 400, "Host"),
    ],
)
async def test_hostile_requests_get_a_4xx_naming_what_was_wrong(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    status: int,
    field: str | None,
) -> None:
    client, _, publisher = api
    app = client._transport.app  # type: ignore[attr-defined]
    body = [orjson.dumps(native("e1"))] if method == "POST" else None
    got, _, answer, _ = await asgi_request(app, method, path, headers, body)
    assert got == status, answer
    assert orjson.loads(answer)["field"] == field
    assert publisher.published == []


@pytest.mark.parametrize(
    "host", [b"127.0.0.1:8080", b"localhost", b"LOCALHOST:1", b"[::1]:8080", b"10.1.2.3", b"app.localhost"]
)
async def test_hosts_that_no_web_page_can_rebind_are_served(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher], host: bytes
) -> None:
    client, _, _ = api
    app = client._transport.app  # type: ignore[attr-defined]
    got, _, answer, _ = await asgi_request(app, "GET", "/v1/sessions/S/count", [(b"host", host)])
    assert got == 200, answer


async def test_listed_hosts_and_the_token_lift_the_host_check(settings: Settings) -> None:
    listed = {"http_allowed_hosts": "ledger.internal, other.example"}
    for_writes = {"http_token": "t0ken"}
    for_all = {"http_token": "t0ken", "http_token_for_reads": True}
    token = (b"authorization", b"Bearer t0ken")
    cases = [
        # (settings, method, host, status)
        (listed, "GET", b"ledger.internal:8080", 200),
        (listed, "GET", b"evil.example", 400),
        # The token guards writes only: reads from a rebound name could still be read by a page.
        (for_writes, "POST", b"evil.example", 202),
        (for_writes, "GET", b"evil.example", 400),
        (for_all, "GET", b"evil.example", 200),
        # Health checks answer any Host: a load balancer's probe may use a name of its own.
        (listed, "HEALTH", b"lb.example", 200),
    ]
    for extra, method, host, status in cases:
        async with open_ledger(settings.model_copy(update=extra)) as ledger, follow_counts(ledger) as counts:
            publisher = DirectPublisher(ledger, CommitSignal())
            app = create_app(HttpContext(ledger, CommitSignal(), counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
            headers = [(b"host", host), token, JSON]
            if method == "POST":
                got, _, answer, _ = await asgi_request(
                    app, "POST", "/v1/events", headers, [orjson.dumps(native(f"e-{len(host)}"))]
                )
            else:
                path = "/healthz" if method == "HEALTH" else "/v1/sessions/S"
                got, _, answer, _ = await asgi_request(app, "GET", path, headers)
            assert got == status, (extra, method, host, answer)


async def test_a_chunked_body_is_refused_once_it_passes_the_bound_not_buffered_whole(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    client, _, publisher = api
    app = client._transport.app  # type: ignore[attr-defined]
    chunk = b"[" + b" " * (1024 * 1024 - 1)
    chunks = [chunk] + [b" " * (1024 * 1024)] * 199  # 200 MiB, with no Content-Length
    got, _, answer, taken = await asgi_request(app, "POST", "/v1/events", [LOCAL, JSON], chunks)
    assert got == 413, answer
    assert orjson.loads(answer)["error"] == "too_large"
    assert taken < 70, f"read {taken} MiB of a body past its bound"
    assert publisher.published == []


async def test_a_token_refuses_a_wrong_or_odd_token_on_every_guarded_route(settings: Settings) -> None:
    guarded = settings.model_copy(update={"http_token": "t0ken", "http_token_for_reads": True})
    async with open_ledger(guarded) as ledger, follow_counts(ledger) as counts:
        publisher = DirectPublisher(ledger, CommitSignal())
        app = create_app(HttpContext(ledger, CommitSignal(), counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
        routes = [
            ("POST", "/v1/events"),
            ("POST", "/v1/callbacks/vonage"),
            ("GET", "/v1/sessions/S"),
            ("GET", "/v1/sessions/S/count"),
            ("GET", "/v1/sessions"),
            ("GET", "/v1/events"),
            ("GET", "/v1/rejected"),
            ("GET", "/v1/sessions/S/stream"),
        ]
        for token in (
            b"Bearer wrong",
            b"Bearer t0ken ",
            b"t0ken",
            "Bearer t0kén".encode(),
            b"Bearer \xff\xfe",
        ):
            for method, path in routes:
                body = [orjson.dumps(native("e1"))] if method == "POST" else None
                headers = [LOCAL, JSON, (b"authorization", token)]
                got, answer_headers, answer, _ = await asgi_request(app, method, path, headers, body)
                assert got == 401, (token, path, answer)
                assert orjson.loads(answer)["field"] == "Authorization"
                assert answer_headers[b"www-authenticate"] == b"Bearer"
        assert publisher.published == []
        got, _, _, _ = await asgi_request(app, "GET", "/healthz", [LOCAL])
        assert got == 200


async def test_request_bodies_are_bounded_together_and_in_time(settings: Settings) -> None:
    bounded = settings.model_copy(update={"http_body_budget": 70 * 1024 * 1024, "http_body_timeout": 2.0})
    async with open_ledger(bounded) as ledger, follow_counts(ledger) as counts:
        publisher = DirectPublisher(ledger, CommitSignal())
        app = create_app(HttpContext(ledger, CommitSignal(), counts, publisher, _ready, _asyncapi))  # type: ignore[arg-type]
        mib = b" " * (1024 * 1024)
        # A client that sends 40 MiB of an array and then nothing more: held until its time is up.
        slow = asyncio.create_task(
            asgi_request(app, "POST", "/v1/events", [LOCAL, JSON], [b"[", *[mib] * 40], unfinished=True)
        )
        await asyncio.sleep(0.5)
        # Another 40 MiB would pass the budget of bodies in hand: refused for now.
        got, headers, answer, _ = await asgi_request(
            app, "POST", "/v1/events", [LOCAL, JSON], [b"[", *[mib] * 40]
        )
        assert got == 503, answer
        assert orjson.loads(answer)["error"] == "busy"
        assert b"LEDGER_HTTP_BODY_BUDGET" in answer
        assert headers[b"retry-after"] == b"2"
        got, _, answer, _ = await asyncio.wait_for(slow, 10)
        assert got == 408, answer
        assert b"LEDGER_HTTP_BODY_TIMEOUT" in answer
        # Both let go of what they held: a request goes through again.
        got, _, answer, _ = await asgi_request(
            app, "POST", "/v1/events", [LOCAL, JSON], [orjson.dumps(native("after"))]
        )
        assert got == 202, answer
        assert [subject for subject, _ in publisher.published] == ["connections.s1.connectionCreated"]


async def test_readyz_names_what_is_not_ready_and_why(
    api: tuple[httpx.AsyncClient, LedgerService, DirectPublisher],
) -> None:
    _, ledger, publisher = api

    async def electing() -> dict[str, str | None]:
        return {
            "nats": None,
            "database": None,
            "consumer": None,
            "streams": "the stream CONNECTIONS has no leader",
        }

    counts = LiveCounts(ledger.store.engine, poll_interval=1)
    app = create_app(HttpContext(ledger, CommitSignal(), counts, publisher, electing, _asyncapi))  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {
        "ready": False,
        "checks": {"nats": True, "database": True, "consumer": True, "streams": False},
        "reasons": {"streams": "the stream CONNECTIONS has no leader"},
    }
