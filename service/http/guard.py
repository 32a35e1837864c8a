"""What every HTTP request passes before any route, as plain ASGI middleware (a
BaseHTTPMiddleware would buffer streaming responses such as SSE through a memory stream):

- the Host header, while no LEDGER_HTTP_TOKEN is set: a web page can make a browser send
  requests to a service on the browser's own machine under a name the page controls (DNS
  rebinding); it cannot make that name an IP address, `localhost`, or one the operator lists in
  LEDGER_HTTP_ALLOWED_HOSTS. With a token, a page cannot add the token, and the check is moot;
- the bearer token: writes need LEDGER_HTTP_TOKEN when one is set, reads too with
  LEDGER_HTTP_TOKEN_FOR_READS; health checks never do;
- writes take `application/json` only: a page may send a cross-site POST without asking first
  only as text/plain or a form;
- `Content-Length`, when sent, is a number and within the request bound (the body itself is
  counted again as it streams in: `read_body`);
- query parameters sent empty (`?limit=&cursor=`) are dropped, so they mean the defaults.

Headers are compared as the bytes that arrived: a value that is not ASCII is simply not the
token, a number or a host, and never an error of ours.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.answers import error
from service.http.intake import MAX_REQUEST_BYTES, HttpRejection
from service.settings import Settings

__all__ = ["Guard", "read_body"]

_UNGUARDED = {"/healthz", "/readyz"}
_BODILESS = {"GET", "HEAD", "OPTIONS", "DELETE"}


def _without_empty_values(query: bytes) -> bytes:
    """The query string less its parameters that have no value: `?limit=&cursor=` is how a
    URL template or an HTML form says "not given", and it means the default, not a bad number."""
    parts = query.split(b"&")
    given = [part for part in parts if part.partition(b"=")[2]]
    return query if len(given) == len(parts) else b"&".join(given)


def _host_name(host: bytes) -> str:
    """The name in a Host header, without its port, lower case: `[::1]:8080` -> `::1`."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    name, colon, port = text.rpartition(":")
    return name if colon and port.isdigit() else text


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.token = f"Bearer {settings.http_token}".encode() if settings.http_token else b""
        self.for_reads = settings.http_token_for_reads
        listed = {name.strip().lower().rstrip(".") for name in settings.http_allowed_hosts.split(",")}
        self.any_host = "*" in listed
        self.hosts = {"localhost", settings.http_host.lower()} | {name for name in listed if name}

    def _host_allowed(self, host: bytes | None) -> bool:
        if self.token or self.any_host or host is None:
            return True  # a browser always sends Host: a request without one is no page's
        name = _host_name(host).rstrip(".")
        return name in self.hosts or name.endswith(".localhost") or _is_ip(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope["query_string"]
        if query and (cleaned := _without_empty_values(query)) != query:
            scope = {**scope, "query_string": cleaned}
        headers = dict(scope["headers"])
        refusal = self._refusal(scope["method"], scope["path"], headers)
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, method: str, path: str, headers: dict[bytes, bytes]) -> _Refusal | None:
        if not self._host_allowed(headers.get(b"host")):
            return _Refusal(
                400,
                "invalid_field",
                "this service does not answer to that Host; add the name to LEDGER_HTTP_ALLOWED_HOSTS, "
                "or set LEDGER_HTTP_TOKEN",
                "Host",
            )
        writes = method not in _BODILESS
        guarded = self.token and path not in _UNGUARDED and (writes or self.for_reads)
        if guarded and not hmac.compare_digest(headers.get(b"authorization", b""), self.token):
            return _Refusal(
                401, "unauthorized", "send Authorization: Bearer <LEDGER_HTTP_TOKEN>", "Authorization"
            )
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():  # bytes.isdigit: ASCII digits only
                return _Refusal(
                    400, "invalid_field", "Content-Length must be a number of bytes", "Content-Length"
                )
            if int(length) > MAX_REQUEST_BYTES:
                return _Refusal(
                    413, "too_large", f"the request is larger than {MAX_REQUEST_BYTES} bytes", None
                )
        if writes and path not in _UNGUARDED:
            media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media_type != b"application/json":
                return _Refusal(
                    415,
                    "unsupported_media_type",
                    "send the body as JSON, with Content-Type: application/json",
                    "Content-Type",
                )
        return None


class _Refusal:
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> Response:
        answer = error(self.status, self.code, self.message, self.field)
        if self.status == 401:
            answer.headers["WWW-Authenticate"] = "Bearer"
        return answer


async def read_body(request: Request) -> bytes:
    """The request's body, counted as it streams in: a body larger than the bound is refused
    once it passes it, whatever its Content-Length said or whether it sent one (chunked)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise HttpRejection(413, "too_large", f"the request is larger than {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
