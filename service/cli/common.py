"""What the command groups share: running a command against the ledger, running a long-lived
process, the --json option, checking a session id, and turning known failures into messages
and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import click

from service.app.bootstrap import open_ledger
from service.cli.loop import run
from service.errors import ConfigurationError, InvalidQuery, TransientError
from service.events import is_session_id
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings, load_settings

__all__ = [
    "DATABASE_HINT",
    "SettingError",
    "json_option",
    "run_process",
    "run_query",
    "run_with_ledger",
    "session_id",
]

T = TypeVar("T")


class SettingError(click.ClickException):
    """A configuration problem: the message names the setting; no usage text is printed."""

    exit_code = 2


DATABASE_HINT = "Check LEDGER_DATABASE_URL and that the database is up."
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON even on a terminal.")


def run_with_ledger(work: Callable[[LedgerService], Awaitable[T]], **ledger_options: Any) -> T:
    """Open the ledger from the settings, run `work`, and turn known failures into messages."""

    async def runner() -> T:
        async with open_ledger(load_settings(), **ledger_options) as ledger:
            return await work(ledger)

    try:
        return run(runner())
    except ConfigurationError as error:
        raise SettingError(str(error)) from None
    except TransientError as error:
        raise click.ClickException(f"{error}. {DATABASE_HINT}") from None


# The option of each query field a refusal can name.
QUERY_OPTIONS = {"at": "--at", "asOf": "--as-of", "from": "--from", "to": "--to"}


def run_query(work: Callable[[LedgerService], Awaitable[T]], **ledger_options: Any) -> T:
    """`run_with_ledger` for a query: a refused option is a usage error naming it."""
    try:
        return run_with_ledger(work, **ledger_options)
    except InvalidQuery as error:
        raise click.BadParameter(
            error.message, param_hint=QUERY_OPTIONS.get(error.field, error.field)
        ) from None


def run_process(main: Callable[[Settings], Coroutine[Any, Any, int]]) -> None:
    """Run a long-lived command (serve, relay) with its logging, and exit with its status."""
    from service.logs import configure_logging

    configure_logging()
    try:
        status = run(main(load_settings()))
    except ConfigurationError as error:
        raise SettingError(str(error)) from None
    except TransientError as error:
        raise click.ClickException(f"{error}. {DATABASE_HINT}") from None
    sys.exit(status)


def session_id(_: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """A session id as the contract allows it, else click's usage error naming the option."""
    if value is not None and not is_session_id(value):
        raise click.BadParameter(
            f"{value!r}: a sessionId is 1 to 256 characters of A-Z a-z 0-9 - _ ~ = :", param=parameter
        )
    return value
