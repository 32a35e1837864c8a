"""Hooks are decided once per event across processes (pipeline/batches.py): two pipelines on one
ledger, as two instances or `serve` and `connledger import` are, holding copies of the same new
events at the same moment. On every backend."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from service.hooks.loader import NamedHook
from service.hooks.runner import HookRunner
from service.ledger.model import Appended, Duplicate
from service.pipeline.batches import Pipeline
from service.pipeline.ledger_service import LedgerService
from service.pipeline.outcomes import Deferred
from tests.helpers import created


def _pipeline(
    ledger: LedgerService, calls: Counter[str], name: str, *, claim_timeout: float = 300
) -> Pipeline:
    def hook(event: Any) -> None:
        calls[event.id] += 1
        if event.id.endswith("-bot"):
            event.preventDefault()

    runner = HookRunner([NamedHook(name, hook, False)], timeout=1, fail_closed=False)
    return Pipeline(ledger.store, runner, ledger.settings.subject_prefix, claim_timeout=claim_timeout)


async def test_copies_held_by_two_processes_run_their_hooks_once(ledger: LedgerService) -> None:
    calls: Counter[str] = Counter()
    first, second = _pipeline(ledger, calls, "first"), _pipeline(ledger, calls, "second")
    one = await first.prepare([created("e1", connection="a"), created("e2-bot", connection="b")])
    # The second holds copies of both, and one more, before the first has appended anything.
    two = await second.prepare(
        [created("e2-bot", connection="b"), created("e3", connection="c"), created("e1", connection="a")]
    )
    assert two.outcomes[0] == Deferred("e2-bot")
    assert two.outcomes[2] == Deferred("e1")
    assert [c.event.id for c in two.candidates] == ["e3"]
    assert [type(o) for o in (await first.commit(one)).outcomes] == [Appended, Appended]
    result = await second.commit(two)
    assert [type(o) for o in result.outcomes] == [Deferred, Appended, Deferred]
    # Handed back and taken again: duplicates now, their hooks not run again.
    again = await second.process([created("e2-bot", connection="b"), created("e1", connection="a")])
    assert [type(o) for o in again.outcomes] == [Duplicate, Duplicate]
    assert calls == Counter({"e1": 1, "e2-bot": 1, "e3": 1})
    # The decision of the process that ran the hooks is the one recorded.
    records = [r async for rows in ledger.store.records() for r in rows]
    assert [(r[2], bool(r[11]), r[12]) for r in records] == [
        ("e1", False, None),
        ("e2-bot", True, "first"),
        ("e3", False, None),
    ]
    # Every claim was let go once its event was in the ledger.
    assert await ledger.store.claim_hooks(["e1", "e2-bot", "e3"], "anyone", 10**9) == {"e1", "e2-bot", "e3"}


async def test_a_claim_left_by_a_process_that_died_is_taken_over_once_stale(ledger: LedgerService) -> None:
    calls: Counter[str] = Counter()
    died = _pipeline(ledger, calls, "died")
    await died.prepare([created("e1")])  # claimed and decided, never appended: it died
    patient = _pipeline(ledger, calls, "patient", claim_timeout=300)
    waiting = await patient.process([created("e1")])
    assert waiting.outcomes == [Deferred("e1")]
    await asyncio.sleep(0.05)
    eager = _pipeline(ledger, calls, "eager", claim_timeout=0.01)
    taken = await eager.process([created("e1")])
    assert type(taken.outcomes[0]) is Appended
    assert calls["e1"] == 2, "its first decision never reached the ledger: the hooks run again"


async def test_without_hooks_nothing_is_claimed(ledger: LedgerService) -> None:
    result = await ledger.pipeline.process([created("e1")])
    assert type(result.outcomes[0]) is Appended
    assert await ledger.store.claim_hooks(["e1"], "anyone", 10**9) == {"e1"}


async def test_a_process_takes_its_own_claims_again_and_renews_them(ledger: LedgerService) -> None:
    calls: Counter[str] = Counter()
    holder = _pipeline(ledger, calls, "holder", claim_timeout=0.2)
    await holder.prepare([created("e1")])  # claimed; say its commit failed and it prepares again
    again = await holder.prepare([created("e1")])
    assert [c.event.id for c in again.candidates] == ["e1"], "its own claim is its own"
    # Renewed while its batch is in hand, the claim is not taken over however long that takes.
    for _ in range(4):
        await asyncio.sleep(0.1)
        await holder.renew_claims()
    rival = _pipeline(ledger, calls, "rival", claim_timeout=0.2)
    assert (await rival.prepare([created("e1")])).outcomes == [Deferred("e1")]
    assert type((await holder.commit(again)).outcomes[0]) is Appended
    assert calls["e1"] == 2  # prepared twice by the holder itself: its last decision is recorded
