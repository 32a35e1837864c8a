"""preventDefault hooks: the cancelable event, loading hooks, and running them with timeouts."""

from service.hooks.event import CancelableEvent, ConnectionView
from service.hooks.loader import HookFactory, NamedHook, load_hooks
from service.hooks.runner import HookRunner

__all__ = [
    "CancelableEvent",
    "ConnectionView",
    "HookFactory",
    "HookRunner",
    "NamedHook",
    "load_hooks",
]
