"""Hooks for the end-to-end tests (not tests themselves): they write the id of every event they are
called for, one a line, to the file named by CONNLEDGER_TEST_HOOK_LOG."""

from __future__ import annotations

import asyncio
import os
from typing import Any


def record(event: Any) -> None:
    with open(os.environ["CONNLEDGER_TEST_HOOK_LOG"], "a", encoding="utf-8") as log:
        log.write(event.id + "\n")


async def slow_record(event: Any) -> None:
    """`record`, after CONNLEDGER_TEST_HOOK_SECONDS of waiting (an async hook that calls out)."""
    await asyncio.sleep(float(os.environ["CONNLEDGER_TEST_HOOK_SECONDS"]))
    record(event)
