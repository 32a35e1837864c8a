"""Expiry (CONTRACT section 13): a connection live for longer than the age gets one destroy of
origin expiry, through the hooks, once however often or by however many instances it is run.
Both databases, with a clock the test sets."""

from __future__ import annotations

import asyncio
from typing import Any

from service.app.bootstrap import open_ledger
from service.metrics import Metrics
from service.pipeline.expiry import Expirer
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings
from tests.contract.test_ledger import records
from tests.helpers import created, destroyed

CREATED_AT = 1_732_699_990_000
AGE = 60.0  # seconds
PAST_THE_AGE = CREATED_AT + 60_001
WITHIN_THE_AGE = CREATED_AT + 59_000


def expirer(ledger: LedgerService, now: int, metrics: Metrics | None = None) -> Expirer:
    return Expirer(ledger.store, ledger.pipeline, AGE, metrics, clock=lambda: now)


async def test_a_connection_past_the_age_gets_exactly_one_expiry_destroy(ledger: LedgerService) -> None:
    await ledger.pipeline.process(
        [
            created("e1", connection="old"),
            created("e2", connection="young", creation_time=CREATED_AT + 30_000),
            created("e3", connection="gone"),
            destroyed("e4", connection="gone"),
        ]
    )
    assert await expirer(ledger, WITHIN_THE_AGE).run_once() == 0
    assert await expirer(ledger, CREATED_AT + 60_000).run_once() == 0  # live for the age, not longer
    metrics = Metrics()
    assert await expirer(ledger, PAST_THE_AGE, metrics).run_once() == 1
    assert await expirer(ledger, PAST_THE_AGE).run_once() == 0  # a second pass appends nothing
    rows = await records(ledger)
    assert len(rows) == 5
    destroy = rows[-1]
    assert destroy["origin"] == "expiry"
    assert destroy["id"].startswith("expiry:")
    assert (destroy["type"], destroy["reason"]) == ("connectionDestroyed", "networkDisconnected")
    assert destroy["connection"] == {"connectionId": "old", "creationTime": CREATED_AT, "data": "name=Ana"}
    assert destroy["timestamp"] == CREATED_AT + 60_000  # when it reached the age
    assert (await ledger.queries.count("s1"))["count"] == 1  # "young" is still live
    sample = metrics.registry.get_sample_value
    assert sample("ledger_synthetic_events_total", {"origin": "expiry"}) == 1
    assert sample("ledger_ghosts_found_total", {"origin": "expiry"}) == 1


async def test_a_rebuild_keeps_what_expiry_appended(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1")])
    await expirer(ledger, PAST_THE_AGE).run_once()
    await ledger.store.rebuild()
    assert (await ledger.queries.count("s1"))["count"] == 0
    assert await expirer(ledger, PAST_THE_AGE).run_once() == 0


async def test_two_expirers_at_once_append_once(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created(f"e{n}", connection=f"c{n}") for n in range(30)])
    first, second = expirer(ledger, PAST_THE_AGE), expirer(ledger, PAST_THE_AGE)
    held = await second.lease.try_acquire()
    assert held
    assert await first.run_once() is None  # the lease is the other's
    await second.lease.release()
    results = await asyncio.gather(first.run_once(), second.run_once())
    assert sorted(r or 0 for r in results) == [0, 30]
    assert len(await records(ledger)) == 60
    assert (await ledger.queries.count("s1"))["count"] == 0


async def test_the_loop_expires_until_stopped(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1")])
    running = expirer(ledger, PAST_THE_AGE)
    task = asyncio.create_task(running.run())
    for _ in range(200):
        if (await ledger.queries.count("s1"))["count"] == 0:
            break
        await asyncio.sleep(0.02)
    running.stop()
    await asyncio.wait_for(task, 15)
    assert [r["origin"] for r in await records(ledger)] == [None, "expiry"]
    assert not running.lease.held


def veto_expiry(event: Any) -> None:
    if event.origin == "expiry":
        event.preventDefault()


async def test_a_hooks_veto_of_an_expiry_is_recorded_and_not_offered_again(settings: Settings) -> None:
    hooked = settings.model_copy(update={"hooks": "tests.contract.test_expiry:veto_expiry"})
    async with open_ledger(hooked) as ledger:
        await ledger.pipeline.process([created("e1")])
        assert await expirer(ledger, PAST_THE_AGE).run_once() == 1
        assert await expirer(ledger, PAST_THE_AGE).run_once() == 0
        rows = await records(ledger)
        assert [(r["origin"], r["defaultPrevented"]) for r in rows] == [(None, False), ("expiry", True)]
        assert rows[1]["preventedBy"] == "tests.contract.test_expiry:veto_expiry"
        assert (await ledger.queries.count("s1"))["count"] == 1
