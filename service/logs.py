"""How the service's processes log: text on a terminal, JSON lines otherwise, any URL's
password masked in either."""

from __future__ import annotations

import logging
import sys
import time

import orjson

from service.redact import mask_secrets

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]


class TextFormatter(logging.Formatter):
    """A line of text for a terminal. Any URL's password in it is masked, whoever logged it
    (nats-py, uvicorn, an exception's message): see redact.py."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors: what a terminal shows as text, URL
    passwords masked as there."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure_logging() -> None:
    """Text on a terminal, JSON lines otherwise; nothing per message at INFO."""
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # nats-py reports reconnects itself; our callbacks log them once, in a line each.
    logging.getLogger("nats").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO when it migrates; the migrations it runs
    # are worth a line each, its plugins are not.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
