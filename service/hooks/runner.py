"""Running the hooks on one event and taking the decision that the ledger row records.

All hooks run, in order, even after one has prevented the default (as in the DOM). A hook that
raises or overruns its timeout is recorded as a failure; its own call to preventDefault() is
then disregarded and the default goes ahead, unless the service fails closed, in which case the
failure itself prevents the default.

Async hooks are cancelled at the timeout. Sync hooks run on the event loop (a thread per call
would cost more than most hooks do), so they cannot be interrupted: one that overruns is only
recorded as timed out. Hooks that wait on I/O should be async.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence

from service.decisions import ALLOWED, Decision, HookFailure
from service.events import Event
from service.hooks.event import CancelableEvent
from service.hooks.loader import NamedHook

__all__ = ["HookRunner"]


class HookRunner:
    def __init__(self, hooks: Sequence[NamedHook], timeout: float, fail_closed: bool) -> None:
        self.hooks = tuple(hooks)
        self.timeout = timeout
        self.fail_closed = fail_closed

    def __bool__(self) -> bool:
        return bool(self.hooks)

    async def _call(self, hook: NamedHook, event: CancelableEvent) -> None:
        if hook.is_async:
            await asyncio.wait_for(hook.fn(event), self.timeout)  # type: ignore[arg-type]
            return
        started = time.perf_counter()
        result = hook.fn(event)
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            await asyncio.wait_for(result, self.timeout)
        elif time.perf_counter() - started > self.timeout:
            raise TimeoutError(f"took longer than the {self.timeout:g} s hook timeout")

    async def decide(self, event: Event) -> Decision:
        cancelable = CancelableEvent(event)
        prevented_by: str | None = None
        failures: list[HookFailure] = []
        for hook in self.hooks:
            before = cancelable.is_default_prevented()
            try:
                await self._call(hook, cancelable)
            except Exception as exc:  # any failure of a hook is recorded, never raised
                if isinstance(exc, TimeoutError) and not str(exc):
                    message = f"TimeoutError: took longer than the {self.timeout:g} s hook timeout"
                else:
                    message = f"{type(exc).__name__}: {exc}"
                failures.append(HookFailure(hook.name, message[:500]))
                # Fail open: the failed hook's own veto does not count.
                cancelable._prevented = before or self.fail_closed
            if not before and cancelable.is_default_prevented():
                prevented_by = hook.name
        cancelable._frozen = True
        if not failures and prevented_by is None:
            return ALLOWED
        return Decision(cancelable.is_default_prevented(), prevented_by, tuple(failures))
