"""The one exception tree of Connection Ledger.

    LedgerError                      anything the service raises on purpose
    ├── ConfigurationError           a LEDGER_* setting is wrong; names the setting
    ├── RejectedInput                an input message that can never be appended
    │                                (carries a RejectCode, a message and the field)
    ├── TransientError               the database or NATS is unreachable now; retry, ack nothing
    └── HookLoadError                a configured hook cannot be found or is not callable

A `RejectedInput` is data, not a failure of the service: the pipeline turns it into a stored
rejection and acknowledges the message. A `TransientError` is the opposite: nothing is
acknowledged and the same input is tried again later.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ConfigurationError",
    "ErrorCode",
    "HookLoadError",
    "InvalidQuery",
    "LedgerError",
    "RejectCode",
    "RejectedInput",
    "TransientError",
    "error_body",
]


class RejectCode(StrEnum):
    """Why a message could not be appended (CONTRACT section 6)."""

    MALFORMED_JSON = "malformed_json"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    SUBJECT_MISMATCH = "subject_mismatch"
    CONFLICT = "conflict"


class ErrorCode(StrEnum):
    """The `error` of an answer that refuses a request, over HTTP and NATS request/reply alike.
    Refused input keeps its RejectCode (`invalid_field`, `malformed_json`, `too_large`); these
    are the refusals that are not about an event."""

    # For now, not for good: the database or NATS cannot be reached; ask again.
    UNAVAILABLE = "unavailable"
    # Too many clients at once (LEDGER_MAX_STREAMING_READERS, LEDGER_HTTP_BODY_BUDGET); ask again.
    BUSY = "busy"
    UNAUTHORIZED = "unauthorized"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    TIMEOUT = "timeout"
    NOT_FOUND = "not_found"
    # Any other HTTP-level refusal (a method not allowed, say).
    HTTP_ERROR = "http_error"


def error_body(code: str, message: str, field: str | None = None) -> dict[str, str | None]:
    """The one shape of every refusal: `{"error": <code>, "message": ..., "field": ...}`, where
    `field` names the field, parameter or header at fault (null when none is)."""
    return {"error": code, "message": message, "field": field}


class LedgerError(Exception):
    """Base of every exception the service raises on purpose."""


class ConfigurationError(LedgerError):
    """A setting is missing or wrong. The message names the setting and what to do."""


class HookLoadError(ConfigurationError):
    """A hook named in LEDGER_HOOKS (or an entry point) cannot be loaded."""


class TransientError(LedgerError):
    """A dependency is unavailable for now; the input must be retried, not rejected."""


class InvalidQuery(LedgerError):
    """A query's option breaks a rule (an `at` beyond the head, a window that ends before it
    starts): answered `invalid_field` naming `field`, at every edge."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class RejectedInput(LedgerError):
    """An input that breaks a rule of the contract; it is stored as a rejection."""

    def __init__(self, code: RejectCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str | None]:
        return {"error": self.code.value, "message": self.message, "field": self.field}
