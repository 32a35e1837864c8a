"""The checked-in settings reference is the one the settings class gives, and it names every
setting."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from service.settings_doc import documented_settings, settings_help, settings_markdown

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_docs_settings_md_matches_the_settings_class() -> None:
    assert CHECKED_IN.read_text() == settings_markdown(), (
        "docs/settings.md is out of date: run `connledger settings-doc > docs/settings.md`"
    )


def test_every_setting_is_described_with_its_variable_type_and_default() -> None:
    rows = {setting.variable: setting for setting in documented_settings()}
    assert list(rows) == [f"LEDGER_{name.upper()}" for name in Settings.model_fields]
    assert all(setting.description for setting in rows.values())
    assert (rows["LEDGER_HTTP_PORT"].kind, rows["LEDGER_HTTP_PORT"].default) == (
        "integer, 0 to 65535",
        "8080",
    )
    assert rows["LEDGER_RELAY_MODE"].kind == "`process`, `inline` or `off`"
    assert rows["LEDGER_HOOKS_FAIL_CLOSED"].default == "false"
    assert rows["LEDGER_DATABASE_URL"].default == ""
    markdown = settings_markdown()
    help_text = settings_help()
    for variable in rows:
        assert f"| `{variable}` |" in markdown
        assert variable in help_text
