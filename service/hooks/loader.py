"""Finding hooks: by dotted path (`pkg.mod:fn` or `pkg.mod.fn`) or by entry-point name in the
group `connection_ledger.hooks`.

With LEDGER_HOOKS unset, every hook registered in the group runs, ordered by name, the way
plugins are found. With LEDGER_HOOKS set (even empty), exactly the hooks it names run, in its
order. A hook may be a `HookFactory`: it is then called once with the settings, and returns the
hook, or None when its configuration leaves it off.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from service.errors import HookLoadError

if TYPE_CHECKING:
    from service.hooks.event import CancelableEvent
    from service.settings import Settings

__all__ = ["BUILTIN_IGNORE", "ENTRY_POINT_GROUP", "Hook", "HookFactory", "NamedHook", "load_hooks"]

ENTRY_POINT_GROUP = "connection_ledger.hooks"
# The entry-point name of the hook that applies LEDGER_IGNORE_DATA_PATTERN (pyproject.toml).
BUILTIN_IGNORE = "ignore-by-data"

Hook = Callable[["CancelableEvent"], "Awaitable[None] | None"]


class HookFactory:
    """Wraps `make(settings) -> hook | None`, for hooks that need configuration."""

    def __init__(self, make: Callable[[Settings], Hook | None]) -> None:
        self.make = make


@dataclass(frozen=True, slots=True)
class NamedHook:
    """A loaded hook and the name it was configured by (recorded as `preventedBy`)."""

    name: str
    fn: Hook
    is_async: bool


def _import_path(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise HookLoadError(
            f"LEDGER_HOOKS: {path!r} is not a dotted path; write it as package.module:function"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HookLoadError(
            f"LEDGER_HOOKS: cannot import module {module_name!r} for {path!r}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HookLoadError(f"LEDGER_HOOKS: module {module_name!r} has no attribute {attr!r}") from None
    return target


def _finish(name: str, obj: Any, settings: Settings) -> NamedHook | None:
    if isinstance(obj, HookFactory):
        obj = obj.make(settings)
        if obj is None:
            return None
    if not callable(obj):
        raise HookLoadError(f"hook {name!r} is not callable; it must take one event argument")
    is_async = inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )
    return NamedHook(name, obj, is_async)


def load_hooks(names: Sequence[str] | None, settings: Settings) -> list[NamedHook]:
    """Load the configured hooks. `names` None means every registered entry point.

    LEDGER_IGNORE_DATA_PATTERN is a request for the built-in hook in its own right: a list of
    hooks that leaves it out gets it first, rather than the pattern being ignored in silence."""
    registered = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if names is None:
        names = sorted(registered)
    elif settings.ignore_data_pattern is not None and BUILTIN_IGNORE not in names:
        names = [BUILTIN_IGNORE, *names]
    hooks: list[NamedHook] = []
    for name in names:
        if name in registered:
            try:
                obj = registered[name].load()
            except Exception as exc:
                raise HookLoadError(
                    f"entry point {name!r} in {ENTRY_POINT_GROUP} failed to load: {exc}"
                ) from exc
        elif ":" in name or "." in name:
            obj = _import_path(name)
        else:
            known = ", ".join(sorted(registered)) or "none"
            raise HookLoadError(
                f"LEDGER_HOOKS: {name!r} is neither a dotted path (package.module:function) nor "
                f"an entry point in {ENTRY_POINT_GROUP} (registered: {known})"
            )
        hook = _finish(name, obj, settings)
        if hook is not None:
            hooks.append(hook)
    return hooks
