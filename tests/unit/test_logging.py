"""Logs off a terminal are JSON lines a collector can parse."""

from __future__ import annotations

import logging
import sys

import orjson

from service.serve import JsonFormatter


def test_a_record_is_one_json_line_with_its_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "service.x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "error"
    assert entry["logger"] == "service.x"
    assert entry["message"] == "failed here"
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("Z")
