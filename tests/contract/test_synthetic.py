"""Events the ledger appends itself (CONTRACT section 13): ordinary records with an origin and a
deterministic id, through the hooks, once however often they are appended. Both databases."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import orjson

from service.app.bootstrap import open_ledger
from service.events import Event, EventType, Origin, decode, synthetic_event_id
from service.ledger.model import Appended, Duplicate
from service.ledger.records import record_json
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings
from tests.contract.test_ledger import records
from tests.helpers import body, created


def expiry_destroy(session: str = "s1", connection: str = "c1") -> Event:
    return Event(
        synthetic_event_id(Origin.EXPIRY, session, connection, 1),
        EventType.DESTROYED,
        session,
        1_732_700_100_000,
        connection,
        1_732_699_990_000,
        "name=Ana",
        "networkDisconnected",
        origin=Origin.EXPIRY,
    )


async def append(ledger: LedgerService, *events: Event) -> list[Any]:
    pipeline = ledger.pipeline
    result = await pipeline.commit(await pipeline.prepare_synthetic(list(events), 1))
    return list(result.outcomes)


async def test_a_synthetic_event_is_an_ordinary_record_with_its_origin(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1", connection="c1")])
    assert await append(ledger, expiry_destroy()) == [Appended(2, 2, 0)]
    rows = await records(ledger)
    assert [r["origin"] for r in rows] == [None, "expiry"]
    assert rows[1]["reason"] == "networkDisconnected"
    assert rows[1]["id"].startswith("expiry:")
    assert (await ledger.queries.count("s1"))["count"] == 0


async def test_the_same_synthetic_event_twice_is_one_record(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1", connection="c1")])
    await append(ledger, expiry_destroy())
    assert await append(ledger, expiry_destroy(), expiry_destroy()) == [Duplicate(2), Duplicate(2)]
    assert len(await records(ledger)) == 2


async def test_a_producer_cannot_set_origin(ledger: LedgerService) -> None:
    forged = orjson.dumps({**body("e9"), "origin": "expiry"})
    decoded = decode(forged)
    assert isinstance(decoded, Event)
    assert decoded.origin is None
    await ledger.pipeline.process([created("e9")])
    assert [r["origin"] for r in await records(ledger)] == [None]


SEEN: list[str | None] = []


def veto_expiry(event: Any) -> None:
    SEEN.append(event.origin)
    if event.origin == "expiry":
        event.preventDefault()


async def test_a_hook_can_prevent_a_synthetic_event_and_the_veto_is_recorded(settings: Settings) -> None:
    SEEN.clear()
    hooked = settings.model_copy(update={"hooks": "tests.contract.test_synthetic:veto_expiry"})
    async with open_ledger(hooked) as ledger:
        await ledger.pipeline.process([created("e1", connection="c1")])
        assert await append(ledger, expiry_destroy()) == [Appended(2, 2, 1, prevented=True)]
        rows = await records(ledger)
        assert (rows[1]["origin"], rows[1]["defaultPrevented"]) == ("expiry", True)
        assert rows[1]["preventedBy"] == "tests.contract.test_synthetic:veto_expiry"
        assert (await ledger.queries.count("s1"))["count"] == 1
    assert SEEN == [None, "expiry"]


async def test_the_databases_encode_origin_as_record_json_does(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1", connection="c1"), created("e2", connection="c2")])
    await append(ledger, expiry_destroy(connection="c1"))
    async with aclosing(ledger.store.records()) as pages:
        expected = [record_json(row) async for rows in pages for row in rows]
    async with aclosing(ledger.store.record_lines()) as chunks:
        dense = b"".join([chunk async for chunk in chunks]).splitlines()
    async with aclosing(ledger.store.record_lines(session_id="s1")) as chunks:
        paged = b"".join([chunk async for chunk in chunks]).splitlines()
    assert dense == paged == expected
    assert [orjson.loads(line)["origin"] for line in expected] == [None, None, "expiry"]
