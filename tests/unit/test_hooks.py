"""preventDefault hooks: the cancelable event, running order, failures and timeouts, loading."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from service.errors import HookLoadError
from service.events import Event, decode
from service.hooks import CancelableEvent, HookRunner, NamedHook, load_hooks
from service.hooks.builtin import IgnoreByData
from service.settings import load_settings
from tests.helpers import DESTROYED, body


def event(**kw: Any) -> Event:
    decoded = decode(orjson.dumps(body("e-1", **kw)))
    assert isinstance(decoded, Event)
    return decoded


def named(name: str, fn: Any) -> NamedHook:
    return NamedHook(name, fn, asyncio.iscoroutinefunction(fn))


def veto(e: CancelableEvent) -> None:
    e.preventDefault()


def test_the_event_speaks_both_spellings() -> None:
    seen = CancelableEvent(event(type_=DESTROYED, reason="forceDisconnected", data="role=recorder"))
    assert seen.cancelable is True
    assert seen.type == DESTROYED
    assert seen.session_id == seen.sessionId == "s1"
    assert seen.reason == "forceDisconnected"
    assert (
        seen.connection.connectionId
        == seen.connection.connection_id
        == seen.connection["connectionId"]
        == "c1"
    )
    assert seen.connection.creationTime == seen.connection["creationTime"] == 1_732_699_990_000
    assert seen.connection.data == "role=recorder"
    assert not seen.isDefaultPrevented()
    assert not seen.is_default_prevented()
    seen.prevent_default()
    assert seen.isDefaultPrevented()
    assert seen.default_prevented
    assert (seen.source, seen.vendor_reason) == ("native", None)


def test_the_event_tells_a_platform_source_and_its_reason() -> None:
    raw = orjson.dumps({**body("e-2", DESTROYED), "source": "livekit", "vendorReason": "ROOM_CLOSED"})
    decoded = decode(raw)
    assert isinstance(decoded, Event)
    seen = CancelableEvent(decoded)
    assert (seen.source, seen.vendor_reason, seen.vendorReason) == ("livekit", "ROOM_CLOSED", "ROOM_CLOSED")


async def test_no_hooks_no_prevention() -> None:
    decision = await HookRunner([], 1.0, False).decide(event())
    assert not decision.prevented
    assert decision.prevented_by is None
    assert decision.failures == ()


async def test_all_hooks_run_in_order_and_the_first_veto_is_named() -> None:
    calls: list[str] = []

    def first(e: CancelableEvent) -> None:
        calls.append("first")

    async def second(e: CancelableEvent) -> None:
        calls.append("second")
        e.preventDefault()

    def third(e: CancelableEvent) -> None:
        calls.append(f"third saw {e.isDefaultPrevented()}")
        e.preventDefault()

    runner = HookRunner(
        [named("a.b:first", first), named("a.b:second", second), named("a.b:third", third)], 1.0, False
    )
    decision = await runner.decide(event())
    assert calls == ["first", "second", "third saw True"]
    assert decision.prevented
    assert decision.prevented_by == "a.b:second"


async def test_a_raising_hook_is_recorded_and_fails_open() -> None:
    def broken(e: CancelableEvent) -> None:
        e.preventDefault()
        raise ValueError("boom")

    decision = await HookRunner([named("m:broken", broken)], 1.0, False).decide(event())
    assert not decision.prevented
    assert decision.prevented_by is None
    assert len(decision.failures) == 1
    assert decision.failures[0].hook == "m:broken"
    assert "ValueError: boom" in decision.failures[0].error


async def test_a_failing_hook_fails_closed_when_configured() -> None:
    def broken(e: CancelableEvent) -> None:
        raise RuntimeError("down")

    decision = await HookRunner([named("m:broken", broken)], 1.0, True).decide(event())
    assert decision.prevented
    assert decision.prevented_by == "m:broken"
    assert decision.failures[0].hook == "m:broken"


async def test_a_failure_does_not_undo_an_earlier_veto() -> None:
    def broken(e: CancelableEvent) -> None:
        raise RuntimeError("down")

    decision = await HookRunner([named("m:veto", veto), named("m:broken", broken)], 1.0, False).decide(
        event()
    )
    assert decision.prevented
    assert decision.prevented_by == "m:veto"


async def test_an_async_hook_past_its_timeout_is_cancelled_and_recorded() -> None:
    finished = False

    async def slow(e: CancelableEvent) -> None:
        nonlocal finished
        e.preventDefault()
        await asyncio.sleep(5)
        finished = True

    started = time.perf_counter()
    decision = await HookRunner([named("m:slow", slow)], 0.05, False).decide(event())
    assert time.perf_counter() - started < 2
    assert not finished
    assert not decision.prevented
    assert "TimeoutError" in decision.failures[0].error


async def test_a_sync_hook_past_its_timeout_is_recorded_and_its_veto_disregarded() -> None:
    def slow(e: CancelableEvent) -> None:
        e.preventDefault()
        time.sleep(0.08)

    decision = await HookRunner([named("m:slow", slow)], 0.02, False).decide(event())
    assert not decision.prevented
    assert "timeout" in decision.failures[0].error


async def test_a_veto_after_the_decision_changes_nothing() -> None:
    kept: list[CancelableEvent] = []

    def keep(e: CancelableEvent) -> None:
        kept.append(e)

    decision = await HookRunner([named("m:keep", keep)], 1.0, False).decide(event())
    kept[0].preventDefault()
    assert not kept[0].isDefaultPrevented()
    assert not decision.prevented


def test_the_builtin_hook_matches_data() -> None:
    import re

    hook = IgnoreByData(re.compile(r"role=(recorder|composer)"))
    recorder = CancelableEvent(event(data="role=recorder"))
    person = CancelableEvent(event(data="name=Ana"))
    nothing = CancelableEvent(event(data=None))
    for e in (recorder, person, nothing):
        hook(e)
    assert recorder.isDefaultPrevented()
    assert not person.isDefaultPrevented()
    assert not nothing.isDefaultPrevented()


def test_loading_by_dotted_path_and_by_entry_point() -> None:
    settings = load_settings(ignore_data_pattern="recorder")
    hooks = load_hooks(
        ["tests.unit.test_hooks:veto", "tests.unit.test_hooks.veto", "ignore-by-data"], settings
    )
    assert [h.name for h in hooks] == [
        "tests.unit.test_hooks:veto",
        "tests.unit.test_hooks.veto",
        "ignore-by-data",
    ]
    assert hooks[0].fn is veto
    assert isinstance(hooks[2].fn, IgnoreByData)


def test_unset_hooks_mean_every_registered_entry_point_and_the_builtin_stays_off_without_a_pattern() -> None:
    assert load_hooks(None, load_settings()) == []
    on = load_hooks(None, load_settings(ignore_data_pattern="bot"))
    assert [h.name for h in on] == ["ignore-by-data"]


def test_a_pattern_brings_the_builtin_hook_into_a_list_that_leaves_it_out() -> None:
    pattern = load_settings(ignore_data_pattern="bot")
    hooks = load_hooks(["tests.unit.test_hooks:veto"], pattern)
    assert [h.name for h in hooks] == ["ignore-by-data", "tests.unit.test_hooks:veto"]
    # Listed, it keeps its place; without a pattern, a list is taken as it is.
    listed = load_hooks(["tests.unit.test_hooks:veto", "ignore-by-data"], pattern)
    assert [h.name for h in listed] == ["tests.unit.test_hooks:veto", "ignore-by-data"]
    assert [h.name for h in load_hooks(["tests.unit.test_hooks:veto"], load_settings())] == [
        "tests.unit.test_hooks:veto"
    ]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("no_such_module_xyz:fn", "cannot import"),
        ("tests.unit.test_hooks:nothing_here", "has no attribute"),
        ("tests.unit.test_hooks:CREATED_NOT", "has no attribute"),
        ("plainword", "neither a dotted path"),
        ("tests.helpers:CREATED", "not callable"),
    ],
)
def test_a_hook_that_cannot_be_loaded_is_a_clear_error(name: str, words: str) -> None:
    with pytest.raises(HookLoadError, match=words):
        load_hooks([name], load_settings())


def test_a_bad_pattern_names_its_setting() -> None:
    from service.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="LEDGER_IGNORE_DATA_PATTERN"):
        load_settings(ignore_data_pattern="(unclosed")
