"""How the command line prints: JSON (NDJSON for lists) to pipes and with --json, readable
tables on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Output"]


class Output:
    def __init__(self, force_json: bool) -> None:
        self.json = force_json or not sys.stdout.isatty()
        self.stdout = sys.stdout.buffer
        # Built on first use: rich takes 30 ms to import, and output to a pipe never needs it.
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console()
        return self._console

    def document(self, value: dict[str, Any], title: str | None = None) -> None:
        if self.json:
            self.stdout.write(orjson.dumps(value) + b"\n")
            self.stdout.flush()
            return
        from rich.table import Table

        table = Table(title=title, show_header=False)
        for key, item in value.items():
            table.add_row(str(key), "" if item is None else str(item))
        self.console.print(table)

    def lines(self, encoded: Iterable[bytes]) -> None:
        """Already-encoded JSON documents, one per line (the fast path for replay)."""
        self.stdout.write(b"".join(line + b"\n" for line in encoded))

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
        from rich.table import Table

        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        self.console.print(table)

    def flush(self) -> None:
        self.stdout.flush()
