"""The LEDGER_* settings described from the settings class itself, so that the description
cannot drift from the code: the list at the end of `connledger --help`, and the Markdown
reference `connledger settings-doc` prints (docs/settings.md is its checked-in copy)."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Any

from pydantic.fields import FieldInfo

from service.settings import PREFIX, Settings

__all__ = ["SettingDoc", "documented_settings", "settings_help", "settings_markdown"]

REGENERATE = "connledger settings-doc > docs/settings.md"


@dataclass(frozen=True, slots=True)
class SettingDoc:
    variable: str  # LEDGER_...
    kind: str  # what the value is, with its bounds
    default: str  # as it would be written in the environment; "" for none
    description: str


def _optional(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `| None`, and whether None was allowed."""
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        others = [arg for arg in typing.get_args(annotation) if arg is not NoneType]
        if len(others) == 1:
            return others[0], True
    return annotation, False


def _rule(field: FieldInfo, name: str) -> Any:
    """A constraint of the field (ge, gt, le, lt, pattern), or None."""
    found = (getattr(rule, name, None) for rule in field.metadata)
    return next((value for value in found if value is not None), None)


def _kind(field: FieldInfo) -> str:
    annotation, _ = _optional(field.annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # FilePath: a Path that must name an existing file
        kind = "path of an existing file"
    elif origin is typing.Literal:
        choices = [f"`{choice}`" for choice in typing.get_args(annotation)]
        kind = ", ".join(choices[:-1]) + " or " + choices[-1]
    elif annotation is bool:
        kind = "`true` or `false`"
    elif annotation is int:
        kind = "integer"
    elif annotation is float:
        kind = "number"
    elif annotation is Path:
        kind = "path"
    elif origin is re.Pattern:
        kind = "regular expression"
    else:
        kind = "string"
    ge, gt, le, lt = (_rule(field, name) for name in ("ge", "gt", "le", "lt"))
    if ge is not None and le is not None:
        kind += f", {ge} to {le}"
    else:
        low = f"at least {ge}" if ge is not None else f"above {gt}" if gt is not None else ""
        high = f"at most {le}" if le is not None else f"below {lt}" if lt is not None else ""
        if low or high:
            kind += ", " + " and ".join(part for part in (low, high) if part)
    pattern = _rule(field, "pattern")
    if pattern is not None:
        kind += f" matching `{pattern}`"
    return kind


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_UNITS = ((1024**3, "GiB"), (1024**2, "MiB"))


def _size(default: str) -> str:
    """A default in bytes also in MiB or GiB, where it is a whole number of them."""
    if default.isdigit():
        for size, unit in _UNITS:
            if int(default) >= size and int(default) % size == 0:
                return f" ({int(default) // size} {unit})"
    return ""


def documented_settings() -> list[SettingDoc]:
    """Every setting, in the order the settings class declares them."""
    return [
        SettingDoc(f"{PREFIX}{name.upper()}", _kind(field), _default(field), field.description or "")
        for name, field in Settings.model_fields.items()
    ]


def settings_help() -> str:
    """The settings for the end of `connledger --help`: each variable and its description."""
    # "\b" keeps click from rewrapping the list.
    lines = ["\b", "Settings (environment variables):"]
    for setting in documented_settings():
        lines.append(f"  {setting.variable:<29} {setting.description}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    # A table cell: "|" would end it, and "<...>" would be read as an HTML tag.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")


def settings_markdown() -> str:
    lines = [
        "# Settings",
        "",
        "Connection Ledger reads its settings from environment variables with the `LEDGER_` prefix,",
        "and from a `.env` file in the folder it runs in, if there is one (the environment wins).",
        "A value that does not fit is refused at start, with an error naming the variable.",
        "`connledger --help` lists them too.",
        "",
        f"This page is generated from `service/settings.py`: `{REGENERATE}`.",
        "",
        "| Variable | Value | Default | Description |",
        "| --- | --- | --- | --- |",
    ]
    for setting in documented_settings():
        default = f"`{setting.default}`{_size(setting.default)}" if setting.default else "unset"
        lines.append(
            f"| `{setting.variable}` | {_cell(setting.kind)} | {default} | {_cell(setting.description)} |"
        )
    return "\n".join(lines) + "\n"
