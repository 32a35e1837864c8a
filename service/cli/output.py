"""How the command line prints: JSON (NDJSON for lists) to pipes and with --json, readable
tables on a terminal.

Everything a table shows goes in as rich `Text`, never as a string: rich reads a string as
console markup, so a connection id, a reason, a hook's name or a file name holding `[bold]`
would restyle the table, and one holding `[/x]` would end the command with a MarkupError.
`Text` is shown as it is (no markup, no emoji codes, no highlighting)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = ["Output"]


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _terminal_console() -> Console:
    from rich.console import Console

    return Console()


def _text(value: object) -> Text:
    """A value as literal text for a table: the one place where rich meets the ledger's data."""
    from rich.text import Text

    return Text("" if value is None else str(value))


class Output:
    def __init__(self, force_json: bool) -> None:
        self.json = force_json or not _stdout_is_terminal()
        self.stdout = sys.stdout.buffer
        # Built on first use: rich takes 30 ms to import, and output to a pipe never needs it.
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = _terminal_console()
        return self._console

    def document(self, value: dict[str, Any], title: str | None = None) -> None:
        if self.json:
            self.stdout.write(orjson.dumps(value) + b"\n")
            self.stdout.flush()
            return
        from rich.table import Table

        table = Table(title=None if title is None else _text(title), show_header=False)
        for key, item in value.items():
            table.add_row(_text(key), _text(item))
        self.console.print(table)

    def lines(self, encoded: Iterable[bytes]) -> None:
        """Already-encoded JSON documents, one per line (the fast path for replay)."""
        self.stdout.write(b"".join(line + b"\n" for line in encoded))

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
        from rich.table import Table

        table = Table(*columns, title=None if title is None else _text(title))
        for row in rows:
            table.add_row(*(_text(v) for v in row))
        self.console.print(table)

    def flush(self) -> None:
        self.stdout.flush()
