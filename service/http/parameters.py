"""Path and query parameters more than one group of routes takes, with the rules that make a
bad one a 422 naming it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from service.events import MAX_POSITION, is_session_id
from service.http.intake import HttpRejection

__all__ = ["NDJSON", "Limit", "OptionalPosition", "Position", "check_session"]

NDJSON = "application/x-ndjson"

# Query parameters that name positions and counts of records: beyond a 64-bit integer, no
# database can compare them, and the answer is a 422 naming the parameter.
Position = Annotated[int, Query(ge=0, le=MAX_POSITION)]
OptionalPosition = Annotated[int | None, Query(ge=0, le=MAX_POSITION)]
Limit = Annotated[int | None, Query(ge=1, le=MAX_POSITION)]


def check_session(session_id: str) -> None:
    if not is_session_id(session_id):
        raise HttpRejection(
            422,
            "invalid_field",
            "sessionId must be 1 to 256 characters of A-Z a-z 0-9 - _ ~ = :",
            "sessionId",
        )
