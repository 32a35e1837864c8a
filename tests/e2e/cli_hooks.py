"""A hook for tests/e2e/test_cli.py (not a test itself): it writes the id of every event it is
called for, one a line, to the file named by CONNLEDGER_TEST_HOOK_LOG."""

from __future__ import annotations

import os
from typing import Any


def record(event: Any) -> None:
    with open(os.environ["CONNLEDGER_TEST_HOOK_LOG"], "a", encoding="utf-8") as log:
        log.write(event.id + "\n")
