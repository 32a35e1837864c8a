"""The hook that ships with the service: connections whose `data` matches a pattern (recorders,
composers, SIP dial-outs) are recorded in the ledger but kept out of the live set and count.

Enabled by LEDGER_IGNORE_DATA_PATTERN, a Python regular expression searched in `data`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from service.hooks.event import CancelableEvent
from service.hooks.loader import Hook, HookFactory

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["IgnoreByData", "ignore_by_data"]


class IgnoreByData:
    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def __call__(self, event: CancelableEvent) -> None:
        data = event.connection.data
        if data is not None and self.pattern.search(data):
            event.preventDefault()


def _make(settings: Settings) -> Hook | None:
    if settings.ignore_data_pattern is None:
        return None
    return IgnoreByData(settings.ignore_data_pattern)


ignore_by_data = HookFactory(_make)
