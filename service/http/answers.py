"""The HTTP API's JSON answers, errors in the contract's one shape:
`{"error": <code>, "message": ..., "field": ...}`."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from service.errors import error_body
from service.streaming_readers import RETRY_AFTER_SECONDS

__all__ = ["error", "json", "unavailable"]


def json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error(status: int, code: str, message: str, field: str | None) -> Response:
    return json(error_body(code, message, field), status)


def unavailable(code: str, message: str) -> Response:
    """503 with Retry-After: a refusal for now, not for good."""
    response = error(503, code, message, None)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
