"""Reconciliation with Vonage Video and LiveKit faked on loopback over real HTTP, each checking
the request's token as the platform does (CONTRACT section 13): a ghost destroyed after two
looks and not after one, a missed join created, 401, 429 with Retry-After, 5xx and an unknown
session never destroying anything, a hook's veto recorded. Both databases."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.app.bootstrap import open_ledger
from service.app.platform_lists import lister_for
from service.pipeline.ledger_service import LedgerService
from service.pipeline.reconcile import PassReport, Reconciler
from service.platforms import jwt_rs256
from service.settings import Settings
from tests.contract.test_ledger import records
from tests.helpers import created
from tests.platform_fakes import (
    APPLICATION,
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    FakePlatform,
    livekit_list,
    serving,
    vonage_key,
    vonage_list,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
JOINED = 1_732_799_000_000


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vonage_key(tmp_path_factory.mktemp("vonage"))


@pytest.fixture(params=["vonage", "livekit"])
def platform(request: pytest.FixtureRequest, key_path: Path) -> Iterator[FakePlatform]:
    key = jwt_rs256.load_private_key(key_path.read_text()) if request.param == "vonage" else None
    with serving(FakePlatform(request.param, key)) as fake:
        yield fake


def configured(settings: Settings, fake: FakePlatform, key_path: Path, **extra: Any) -> Settings:
    if fake.platform == "vonage":
        update = {
            "vonage_api_url": fake.url,
            "vonage_application_id": APPLICATION,
            "vonage_private_key": key_path,
        }
    else:
        update = {
            "livekit_url": fake.url,
            "livekit_api_key": LIVEKIT_KEY,
            "livekit_api_secret": LIVEKIT_SECRET,
        }
    return settings.model_copy(update={**update, **extra})


def listing(fake: FakePlatform, *connections: tuple[str, int]) -> Any:
    return (vonage_list if fake.platform == "vonage" else livekit_list)(*connections)


async def looks(ledger: LedgerService, fake: FakePlatform, key_path: Path, count: int) -> list[PassReport]:
    lister = lister_for(configured(ledger.settings, fake, key_path), fake.platform)
    reconciler = Reconciler(ledger.store, ledger.pipeline, lister, ledger.metrics)
    assert await reconciler.lease.try_acquire()
    try:
        return [await reconciler.reconcile() for _ in range(count)]
    finally:
        await reconciler.lease.release()


async def test_a_ghost_is_destroyed_after_two_looks_and_a_missed_join_created(
    ledger: LedgerService, platform: FakePlatform, key_path: Path
) -> None:
    await ledger.pipeline.process([created("e1", connection="ghost"), created("e2", connection="here")])
    present = listing(platform, ("here", 1), ("missed", JOINED))
    platform.script("s1", present)
    (once,) = await looks(ledger, platform, key_path, 1)
    assert (once.errors, once.appended) == (0, 0)
    assert len(await records(ledger)) == 2

    platform.script("s1", present, present)
    first, second = await looks(ledger, platform, key_path, 2)
    assert (first.appended, second.destroyed, second.created, second.appended) == (0, 1, 1, 2)
    rows = await records(ledger)
    assert [(r["type"], r["connection"]["connectionId"], r["origin"]) for r in rows[2:]] == [
        ("connectionDestroyed", "ghost", "reconcile"),
        ("connectionCreated", "missed", "reconcile"),
    ]
    assert rows[3]["connection"]["creationTime"] == JOINED
    assert (await ledger.queries.count("s1"))["count"] == 2
    assert platform.refused == []


@pytest.mark.parametrize(
    "failure",
    [
        (401, {"message": "invalid token"}, {}),
        (429, {"message": "too many requests"}, {"Retry-After": "1"}),
        (500, {"message": "internal"}, {}),
        (503, {"message": "unavailable"}, {}),
        None,  # a session the platform does not know (404)
    ],
    ids=["401", "429", "500", "503", "unknown session"],
)
async def test_a_failed_look_never_destroys_anything(
    ledger: LedgerService, platform: FakePlatform, key_path: Path, failure: Any
) -> None:
    await ledger.pipeline.process([created("e1", connection="ghost")])
    empty = listing(platform)
    if failure is None:
        platform.script("s1", empty)  # then nothing scripted: the platform knows no such room
    else:
        platform.script("s1", empty, failure, failure)
    started = time.monotonic()
    reports = await looks(ledger, platform, key_path, 3)
    assert [r.errors for r in reports] == [0, 1, 1]
    assert sum(r.appended for r in reports) == 0
    assert len(await records(ledger)) == 1
    assert (await ledger.queries.count("s1"))["count"] == 1
    if failure is not None and failure[0] == 429:
        assert time.monotonic() - started >= 1.0  # the third look waited out the Retry-After
    sample = ledger.metrics.registry.get_sample_value
    assert sample("ledger_reconcile_errors_total", {"platform": platform.platform}) == 2


async def test_a_wrong_secret_is_refused_by_the_platform_and_destroys_nothing(
    settings: Settings, platform: FakePlatform, key_path: Path, tmp_path: Path
) -> None:
    async with open_ledger(settings) as ledger:
        await ledger.pipeline.process([created("e1", connection="ghost")])
        wrong = configured(settings, platform, key_path)
        if platform.platform == "vonage":
            wrong = wrong.model_copy(update={"vonage_private_key": vonage_key(tmp_path)})
        else:
            wrong = wrong.model_copy(update={"livekit_api_secret": "another-secret-of-32-characters!!"})
        platform.script("s1", listing(platform), listing(platform))
        reconciler = Reconciler(ledger.store, ledger.pipeline, lister_for(wrong, platform.platform))
        assert await reconciler.lease.try_acquire()
        reports = [await reconciler.reconcile(), await reconciler.reconcile()]
        await reconciler.lease.release()
        assert [r.errors for r in reports] == [1, 1]
        assert platform.refused == ["s1", "s1"]
        assert len(await records(ledger)) == 1


def veto_reconcile(event: Any) -> None:
    if event.origin == "reconcile":
        event.preventDefault()


async def test_a_hooks_veto_is_recorded(settings: Settings, platform: FakePlatform, key_path: Path) -> None:
    hooked = settings.model_copy(update={"hooks": "tests.contract.test_reconcile_platforms:veto_reconcile"})
    async with open_ledger(hooked) as ledger:
        await ledger.pipeline.process([created("e1", connection="ghost")])
        platform.script("s1", listing(platform), listing(platform))
        reports = await looks(ledger, platform, key_path, 2)
        assert reports[1].appended == 1
        rows = await records(ledger)
        assert (rows[1]["origin"], rows[1]["defaultPrevented"]) == ("reconcile", True)
        assert rows[1]["preventedBy"] == "tests.contract.test_reconcile_platforms:veto_reconcile"
        assert (await ledger.queries.count("s1"))["count"] == 1
