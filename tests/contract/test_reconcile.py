"""Reconciliation against a platform's list (CONTRACT section 13), with a fake list: a ghost is
destroyed after two looks and not after one, a missed join is created, an error never destroys
anything, a hook's veto is recorded; the active sessions are read a page at a time, only the
looks that found something are kept, and requests keep to their rate. Both databases."""

from __future__ import annotations

import time
from typing import Any

import pytest

from service.app.bootstrap import open_ledger
from service.ledger import reconcile_view
from service.ledger.reconcile_view import active_sessions, active_sessions_page
from service.metrics import Metrics
from service.pipeline.ledger_service import LedgerService
from service.pipeline.reconcile import Reconciler, _Pace
from service.platforms.live_lists import Listed, PlatformError
from service.settings import Settings
from tests.contract.test_ledger import records
from tests.helpers import created, destroyed

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


async def test_active_sessions_are_read_a_page_at_a_time_in_session_order(
    ledger: LedgerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["s5", "s1", "s4", "s2", "s3", "s6", "s7"]
    await ledger.pipeline.process([created(f"e-{name}", name, f"c-{name}") for name in names])
    await ledger.pipeline.process([destroyed("e-gone", "s4", "c-s4")])  # no live connection: not active
    engine, sources = ledger.store.engine, FakeList.sources
    assert await active_sessions_page(engine, sources, None, 2) == ["s1", "s2"]
    assert await active_sessions_page(engine, sources, "s3", 2) == ["s5", "s6"]
    assert await active_sessions_page(engine, sources, "s7", 2) == []
    assert await active_sessions_page(engine, ("livekit",), None, 10) == []  # another platform's
    for size in (1, 2, 3, 6, 7, 100):
        found = [s async for s in active_sessions(engine, sources, size)]
        assert found == ["s1", "s2", "s3", "s5", "s6", "s7"], size
    # A pass reads them the same way: pages of two here.
    monkeypatch.setattr(reconcile_view, "PAGE_SIZE", 2)
    fake = FakeList(*({f"c-{name}": Listed(1, None)} for name in ["s1", "s2", "s3", "s5", "s6", "s7"]))
    assert await passes(ledger, fake, 1) == 0
    assert fake.asked == ["s1", "s2", "s3", "s5", "s6", "s7"]


async def test_only_looks_that_found_something_are_kept_between_passes(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created(f"e{n}", f"s{n}", "here") for n in range(1, 4)])
    await ledger.pipeline.process([created("e-ghost", "s2", "ghost")])
    here = {"here": Listed(1, None)}
    missed = {"here": Listed(1, None), "missed": Listed(JOINED, None)}
    running = reconciler(ledger, FakeList(*[here, here, missed] * 3))
    assert await running.lease.try_acquire()
    try:
        assert (await running.reconcile()).appended == 0
        # s1 agreed with its list: nothing kept; s2 has a ghost, s3 a missed join.
        assert sorted(running.looks) == ["s2", "s3"]
        assert (running.looks["s2"].unlisted, running.looks["s2"].unseen) == ({"ghost"}, set())
        assert (running.looks["s3"].unlisted, running.looks["s3"].unseen) == (set(), {"missed"})
        report = await running.reconcile()
        assert (report.sessions, report.destroyed, report.created, report.appended) == (3, 1, 1, 2)
        # Set right after the second look: the third finds nothing, and keeps nothing.
        report = await running.reconcile()
        assert (report.sessions, report.appended) == (3, 0)
        assert running.looks == {}
    finally:
        await running.lease.release()


async def test_a_connection_seen_at_the_first_look_is_never_created(ledger: LedgerService) -> None:
    # Listed at both looks; the ledger saw it come and go before the first: a create is never
    # due, however the two looks are kept.
    await ledger.pipeline.process([created("e1", connection="left"), destroyed("e2", connection="left")])
    await ledger.pipeline.process([created("e3", connection="here")])
    listed = {"here": Listed(1, None), "left": Listed(JOINED, None)}
    assert await passes(ledger, FakeList(listed, listed, listed), 3) == 0


async def test_requests_go_at_most_at_the_rate_given() -> None:
    pace = _Pace(200.0)
    started = time.monotonic()
    for _ in range(21):
        await pace.wait()
    assert time.monotonic() - started >= 0.1 - 0.005  # 20 gaps of 5 ms
