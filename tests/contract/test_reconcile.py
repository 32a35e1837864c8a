"""Reconciliation against a platform's list (CONTRACT section 13), with a fake list: a ghost is
destroyed after two looks and not after one, a missed join is created, an error never destroys
anything, a hook's veto is recorded. Both databases."""

from __future__ import annotations

from typing import Any

from service.app.bootstrap import open_ledger
from service.metrics import Metrics
from service.pipeline.ledger_service import LedgerService
from service.pipeline.reconcile import Reconciler
from service.platforms.live_lists import Listed, PlatformError
from service.settings import Settings
from tests.contract.test_ledger import records
from tests.helpers import created

NOW = 1_732_800_000_000
JOINED = 1_732_799_000_000


class FakeList:
    """Answers each look with the next of `answers`: a list, or an error to raise."""

    platform = "vonage"
    sources = ("native", "vonage")

    def __init__(self, *answers: dict[str, Listed] | PlatformError) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def live(self, session_id: str) -> dict[str, Listed]:
        self.asked.append(session_id)
        answer = self.answers.pop(0)
        if isinstance(answer, PlatformError):
            raise answer
        return answer


def reconciler(ledger: LedgerService, fake: FakeList, metrics: Metrics | None = None) -> Reconciler:
    return Reconciler(ledger.store, ledger.pipeline, fake, metrics, clock=lambda: NOW, rate=1000)


async def passes(ledger: LedgerService, fake: FakeList, count: int, metrics: Metrics | None = None) -> int:
    running = reconciler(ledger, fake, metrics)
    assert await running.lease.try_acquire()
    try:
        appended = 0
        for _ in range(count):
            appended += (await running.reconcile()).appended
        return appended
    finally:
        await running.lease.release()


async def test_a_ghost_is_destroyed_after_two_looks_and_not_after_one(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1", connection="ghost"), created("e2", connection="here")])
    here = {"here": Listed(1, None)}
    assert await passes(ledger, FakeList(here), 1) == 0
    metrics = Metrics()
    assert await passes(ledger, FakeList(here, here), 2, metrics) == 1
    rows = await records(ledger)
    assert len(rows) == 3
    gone = rows[-1]
    assert (gone["origin"], gone["type"], gone["reason"]) == (
        "reconcile",
        "connectionDestroyed",
        "networkDisconnected",
    )
    assert gone["connection"]["connectionId"] == "ghost"
    assert gone["timestamp"] == NOW
    assert gone["id"].startswith("reconcile:")
    assert (await ledger.queries.count("s1"))["count"] == 1
    sample = metrics.registry.get_sample_value
    assert sample("ledger_reconcile_runs_total", {"platform": "vonage"}) == 2
    assert sample("ledger_synthetic_events_total", {"origin": "reconcile"}) == 1
    assert sample("ledger_ghosts_found_total", {"origin": "reconcile"}) == 1


async def test_a_join_listed_twice_that_the_ledger_never_saw_is_created(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1", connection="known")])
    listed = {"known": Listed(1, None), "missed": Listed(JOINED, "name=Bo")}
    assert await passes(ledger, FakeList(listed, {"known": Listed(1, None)}), 2) == 0  # listed once
    assert await passes(ledger, FakeList(listed, listed), 2) == 1
    rows = await records(ledger)
    made = rows[-1]
    assert (made["origin"], made["type"], made["timestamp"]) == ("reconcile", "connectionCreated", JOINED)
    assert made["connection"] == {"connectionId": "missed", "creationTime": JOINED, "data": "name=Bo"}
    assert (await ledger.queries.count("s1"))["count"] == 2
    assert await passes(ledger, FakeList(listed, listed), 2) == 0  # seen now


async def test_an_error_between_two_looks_destroys_nothing(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created("e1", connection="ghost")])
    errors = [
        PlatformError("Vonage answered 401", 401),
        PlatformError("Vonage answered 429", 429, retry_after=0.01),
        PlatformError("Vonage answered 503", 503),
        PlatformError("Vonage does not know the session", 404),
    ]
    metrics = Metrics()
    for error in errors:
        assert await passes(ledger, FakeList({}, error, {}), 3, metrics) == 0
        assert await passes(ledger, FakeList(error, error), 2, metrics) == 0
    assert len(await records(ledger)) == 1
    assert metrics.registry.get_sample_value("ledger_reconcile_errors_total", {"platform": "vonage"}) == 12


async def test_a_session_named_is_looked_at_even_when_the_ledger_has_no_live_connection(
    ledger: LedgerService,
) -> None:
    fake = FakeList({"c9": Listed(JOINED, None)}, {"c9": Listed(JOINED, None)})
    running = reconciler(ledger, fake)
    assert await running.lease.try_acquire()
    await running.reconcile(["quiet"])
    report = await running.reconcile(["quiet"])
    await running.lease.release()
    assert (report.created, report.appended) == (1, 1)
    assert fake.asked == ["quiet", "quiet"]
    assert (await ledger.queries.count("quiet"))["count"] == 1


def veto_reconcile(event: Any) -> None:
    if event.origin == "reconcile":
        event.preventDefault()


async def test_a_hooks_veto_of_a_reconcile_destroy_is_recorded(settings: Settings) -> None:
    hooked = settings.model_copy(update={"hooks": "tests.contract.test_reconcile:veto_reconcile"})
    async with open_ledger(hooked) as ledger:
        await ledger.pipeline.process([created("e1", connection="ghost")])
        assert await passes(ledger, FakeList({}, {}, {}), 3) == 1
        rows = await records(ledger)
        assert [(r["origin"], r["defaultPrevented"]) for r in rows] == [(None, False), ("reconcile", True)]
        assert rows[1]["preventedBy"] == "tests.contract.test_reconcile:veto_reconcile"
        assert (await ledger.queries.count("s1"))["count"] == 1
