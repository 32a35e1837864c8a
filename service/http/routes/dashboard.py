"""The dashboard: its pages and their static files, outside the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from service.errors import ErrorCode
from service.http.answers import error as _error
from service.http.context import HttpContext

__all__ = ["STATIC", "router"]

STATIC = Path(__file__).parent.parent / "static"


def router(context: HttpContext) -> APIRouter:
    routes = APIRouter()

    @routes.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(STATIC / "index.html")

    @routes.get("/sessions/{session_id}", include_in_schema=False)
    async def session_page(session_id: str) -> Response:
        return FileResponse(STATIC / "session.html")

    @routes.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = STATIC / name
        if "/" in name or not path.is_file():
            return _error(404, ErrorCode.NOT_FOUND, f"no static file {name!r}", None)
        return FileResponse(path)

    return routes
