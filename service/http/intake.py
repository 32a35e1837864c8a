"""Turning an HTTP request body into events to publish, with the contract's statuses:
400 for broken JSON or an empty array, 413 when too large, 422 for a broken rule. Nothing of a
request is accepted unless all of it is valid. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from service.errors import RejectCode, RejectedInput
from service.events import MAX_BODY_BYTES, Event, Ignored, check_body_size, decode, decode_object

__all__ = [
    "MAX_BATCH",
    "MAX_REQUEST_BYTES",
    "HttpRejection",
    "events_from_body",
    "translated",
    "vonage_from_body",
]

MAX_BATCH = 1000
# A full batch of maximal events, plus room for the array's own punctuation and spacing.
MAX_REQUEST_BYTES = MAX_BATCH * MAX_BODY_BYTES + 64 * 1024


class HttpRejection(Exception):
    """A request refused as a whole, with its HTTP status and the contract's error body.

    `field` is the field's name as the contract writes it (`connection.data`), whether the body
    was one event or an array; for an element of an array, `index` says which (from 0)."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, index: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.index = index

    def body(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"error": self.code, "message": self.message, "field": self.field}
        if self.index is not None:
            answer["index"] = self.index
        return answer


_STATUS = {RejectCode.TOO_LARGE: 413, RejectCode.MALFORMED_JSON: 400}


def _rejection(error: RejectedInput, index: int | None = None) -> HttpRejection:
    message = error.message if index is None else f"event [{index}]: {error.message}"
    return HttpRejection(_STATUS.get(error.code, 422), error.code.value, message, error.field, index)


def _one_body_size(raw: bytes) -> None:
    """A body that is one event is refused as too large before it is parsed: the contract
    checks size before anything else, its JSON included (`decode` would, but the checks here
    that give HTTP's own messages come first)."""
    try:
        check_body_size(raw)
    except RejectedInput as error:
        raise _rejection(error) from None


def _parse(raw: bytes) -> Any:
    if len(raw) > MAX_REQUEST_BYTES:
        raise HttpRejection(
            413, RejectCode.TOO_LARGE.value, f"the request is larger than {MAX_REQUEST_BYTES} bytes"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpRejection(
            400, RejectCode.MALFORMED_JSON.value, f"the body is not valid JSON: {exc}"
        ) from None


def _native(raw: bytes, document: Any, index: int | None) -> Event:
    try:
        check_body_size(raw)  # size before any field rule, as `decode` checks (an element's too)
    except RejectedInput as error:
        raise _rejection(error, index) from None
    if isinstance(document, dict) and "type" not in document:
        raise _rejection(
            RejectedInput(
                RejectCode.INVALID_FIELD,
                "type is required: connectionCreated or connectionDestroyed "
                "(Vonage callbacks go to POST /v1/callbacks/vonage)",
                "type",
            ),
            index,
        )
    try:
        event = decode(raw)
    except RejectedInput as error:
        raise _rejection(error, index) from None
    assert isinstance(event, Event)  # a body with "type" is never a Vonage body
    return event


def events_from_body(raw: bytes) -> list[tuple[Event, bytes]]:
    """One native body or an array of up to 1000: the events with the bytes to publish."""
    if not raw.lstrip().startswith(b"["):
        _one_body_size(raw)  # not an array: one event, whatever else is wrong with it
    document = _parse(raw)
    if not isinstance(document, list):
        return [(_native(raw, document, None), raw)]
    if not document:
        raise HttpRejection(400, RejectCode.INVALID_FIELD.value, "the array is empty; send 1 to 1000 events")
    if len(document) > MAX_BATCH:
        raise HttpRejection(
            413,
            RejectCode.TOO_LARGE.value,
            f"the array holds {len(document)} events; at most {MAX_BATCH} are accepted",
        )
    out: list[tuple[Event, bytes]] = []
    for index, element in enumerate(document):
        element_raw = orjson.dumps(element)
        out.append((_native(element_raw, element, index), element_raw))
    return out


def vonage_from_body(raw: bytes) -> tuple[Event, bytes] | None:
    """A Vonage Session Monitoring callback: its event, or None for one the ledger ignores."""
    _one_body_size(raw)
    document = _parse(raw)
    if isinstance(document, dict) and "event" not in document:
        raise HttpRejection(
            422,
            RejectCode.INVALID_FIELD.value,
            "event is required: a Vonage Session Monitoring callback names its event",
            "event",
        )
    try:
        decoded = decode(raw)
    except RejectedInput as error:
        raise _rejection(error) from None
    if isinstance(decoded, Ignored):
        return None
    return decoded, raw


def translated(translate: Callable[[], dict[str, Any] | Ignored]) -> tuple[Event, bytes] | None:
    """A platform's webhook as the native body to publish, checked by the native rules as any
    producer's is; None for an event the ledger ignores. `translate` reads the platform's body
    (service/platforms/) and raises RejectedInput naming the platform's field at fault."""
    try:
        native = translate()
        if isinstance(native, Ignored):
            return None
        raw = orjson.dumps(native)
        # The rules of a body that came as these bytes, without parsing them again.
        check_body_size(raw)
        event = decode_object(native)
    except RejectedInput as error:
        raise _rejection(error) from None
    assert isinstance(event, Event)  # a native body is never a Vonage one
    return event, raw
