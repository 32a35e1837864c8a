"""`connledger` on a terminal prints tables with rich. Ids, data, reasons, messages and file
names are the ledger's data, not console markup: `[/x]` or `[bold]` in them is shown as it is,
and neither ends the command nor restyles the table.

In-process (click's runner), with stdout made to look like a terminal of 300 columns that
renders colours and styles as escape codes."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from rich.console import Console

from service.cli import cli
from service.cli import output as cli_output
from tests.helpers import body


def _styled_rows(shown: str) -> list[str]:
    """The table's rows (between │ borders; the header's are ┃) that carry any escape code:
    the header and the title are styled by rich, the data never is."""
    return [line for line in shown.splitlines() if "│" in line and "\x1b[" in line]


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    screen = io.StringIO()
    monkeypatch.setattr(cli_output, "_stdout_is_terminal", lambda: True)
    monkeypatch.setattr(
        cli_output,
        "_terminal_console",
        lambda: Console(file=screen, force_terminal=True, color_system="truecolor", width=300),
    )
    return screen


def _invoke(database_url: str, *args: str) -> None:
    env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_HOOKS": ""}
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_every_table_shows_markup_in_the_data_as_text(
    database_url: str, tmp_path: Path, terminal: io.StringIO
) -> None:
    events = [
        body("e1", connection="[/x]", data="[bold]name=Ana"),
        body("e2", connection="[bold]c2"),
        {  # Vonage's reasons are free text
            "sessionId": "s1",
            "projectId": "1",
            "event": "connectionDestroyed",
            "timestamp": 1_732_700_000_500,
            "reason": "[red]kicked[/red] :smile:",
            "connection": {"id": "[/x]", "createdAt": 1_732_700_000_400, "data": "[bold]"},
        },
        {**body("e4"), "type": "[/x]"},  # unknown_type: its message quotes the type
    ]
    source = tmp_path / "[bold]events[red].ndjson"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))

    _invoke(database_url, "import", str(source))
    imported = terminal.getvalue()
    assert "[bold]events[red].ndjson" in "".join(imported.split())  # the title, wrapped
    assert "rejected   │ 1" in imported

    for command in (["replay"], ["sessions", "--all"], ["rejected"], ["count", "s1"]):
        terminal.seek(0)
        terminal.truncate()
        _invoke(database_url, *command)
        shown = terminal.getvalue()
        assert shown.strip(), command
        assert _styled_rows(shown) == [], f"{command}: the data restyled the table"
        if command == ["replay"]:
            assert shown.count("[/x]") == 2
            assert "[bold]c2" in shown
            assert "[red]kicked[/red] :smile:" in shown
        if command == ["rejected"]:
            assert "'[/x]'" in shown
    assert _styled_rows(imported) == []
