"""Logs off a terminal are JSON lines a collector can parse; on a terminal, text. Neither ever
shows a URL's password, whoever logged it."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from service.logs import JsonFormatter, TextFormatter
from service.nats.connect import _on_error

SECRET_URLS = "nats://ledger:hunter2@nats-1:4222,nats://s3cr3ttoken@nats-2:4222"
MASKED_URLS = "nats://ledger:***@nats-1:4222,nats://***@nats-2:4222"


def _record(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    return logging.LogRecord(
        "service.x", logging.ERROR, __file__, 1, message, args, sys.exc_info() if exc_info else None
    )


def test_a_record_is_one_json_line_with_its_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed %s", "here", exc_info=True)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "error"
    assert entry["logger"] == "service.x"
    assert entry["message"] == "failed here"
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("Z")


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter("%(levelname)s %(message)s")])
def test_no_line_shows_a_password_in_its_message_or_its_exception(formatter: logging.Formatter) -> None:
    try:
        raise ConnectionError(f"cannot reach {SECRET_URLS}")
    except ConnectionError:
        record = _record("connecting to %s failed", SECRET_URLS, exc_info=True)
    line = formatter.format(record)
    assert "hunter2" not in line
    assert "s3cr3ttoken" not in line
    assert line.count(MASKED_URLS) == 2  # the message and the exception


async def test_a_nats_error_is_logged_masked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.nats.connect"):
        await _on_error(OSError(f"connect to {SECRET_URLS} refused"))
    assert [r.getMessage() for r in caplog.records] == [f"nats: OSError: connect to {MASKED_URLS} refused"]
