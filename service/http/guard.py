"""What every HTTP request passes before any route, as plain ASGI middleware (a
BaseHTTPMiddleware would buffer streaming responses such as SSE through a memory stream):

- the Host header of every request the token does not guard (all of them without
  LEDGER_HTTP_TOKEN; reads, unless LEDGER_HTTP_TOKEN_FOR_READS): a web page can make a browser
  send requests to a service on the browser's own machine, or its network, under a name the page
  controls (DNS rebinding), and read the answers; it cannot make that name an IP address,
  `localhost`, or one the operator lists in LEDGER_HTTP_ALLOWED_HOSTS. A request the token
  guards needs no such check: a page cannot add the token. Health checks are answered to any
  Host (a load balancer's probe may use a name of its own, and they tell nothing);
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

import asyncio
import hmac
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ErrorCode, RejectCode
from service.http.answers import error
from service.http.intake import MAX_REQUEST_BYTES, HttpRejection
from service.settings import Settings
from service.streaming_readers import RETRY_AFTER_SECONDS

__all__ = ["SIGNED_PATHS", "Guard", "RequestBodies"]

_UNGUARDED = {"/healthz", "/readyz"}
# Platforms' webhooks prove who sent them by their own signatures, checked by their routes: no
# page can forge one, so neither the Host check nor the bearer token (which LiveKit's own
# Authorization header would clash with) applies, and each takes its platform's media type.
SIGNED_PATHS = frozenset({"/v1/callbacks/livekit", "/v1/callbacks/twilio", "/v1/callbacks/agora"})
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
        if self.any_host or host is None:
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
        writes = method not in _BODILESS
        if path in SIGNED_PATHS:
            return self._length_refusal(headers)
        guarded = bool(self.token) and path not in _UNGUARDED and (writes or self.for_reads)
        if not guarded and path not in _UNGUARDED and not self._host_allowed(headers.get(b"host")):
            return _Refusal(
                400,
                RejectCode.INVALID_FIELD,
                "this service does not answer to that Host; add the name to LEDGER_HTTP_ALLOWED_HOSTS "
                "(or require LEDGER_HTTP_TOKEN for reads too: LEDGER_HTTP_TOKEN_FOR_READS)",
                "Host",
            )
        if guarded and not hmac.compare_digest(headers.get(b"authorization", b""), self.token):
            return _Refusal(
                401, ErrorCode.UNAUTHORIZED, "send Authorization: Bearer <LEDGER_HTTP_TOKEN>", "Authorization"
            )
        refusal = self._length_refusal(headers)
        if refusal is not None:
            return refusal
        if writes and path not in _UNGUARDED:
            media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media_type != b"application/json":
                return _Refusal(
                    415,
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    "send the body as JSON, with Content-Type: application/json",
                    "Content-Type",
                )
        return None

    @staticmethod
    def _length_refusal(headers: dict[bytes, bytes]) -> _Refusal | None:
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():  # bytes.isdigit: ASCII digits only
                return _Refusal(
                    400,
                    RejectCode.INVALID_FIELD,
                    "Content-Length must be a number of bytes",
                    "Content-Length",
                )
            # Compared as text first: int() refuses digit strings of thousands of digits.
            if len(length) > len(str(MAX_REQUEST_BYTES)) or int(length) > MAX_REQUEST_BYTES:
                return _Refusal(
                    413, RejectCode.TOO_LARGE, f"the request is larger than {MAX_REQUEST_BYTES} bytes", None
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


class RequestBodies:
    """Request bodies, read within bounds: each one by bytes as it streams in (a body past the
    request bound is refused once it passes it, whatever its Content-Length said or whether it
    sent one, chunked), all of them together by LEDGER_HTTP_BODY_BUDGET (the bytes of the
    bodies being read or handled at once; past it 503 with Retry-After, not memory without
    end), and each within LEDGER_HTTP_BODY_TIMEOUT seconds (a client that trickles its body
    holds nothing for longer; 408)."""

    def __init__(self, budget: int, timeout: float) -> None:
        self.budget = budget
        self.timeout = timeout
        self.in_use = 0

    @asynccontextmanager
    async def read(self, request: Request) -> AsyncIterator[bytes]:
        """The body, held against the budget until the block ends (its handling included)."""
        chunks: list[bytes] = []
        size = held = 0
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > MAX_REQUEST_BYTES:
                            raise HttpRejection(
                                413,
                                RejectCode.TOO_LARGE,
                                f"the request is larger than {MAX_REQUEST_BYTES} bytes",
                            )
                        if self.in_use + len(chunk) > self.budget:
                            raise HttpRejection(
                                503,
                                ErrorCode.BUSY,
                                "request bodies in hand fill LEDGER_HTTP_BODY_BUDGET; send this one again "
                                f"in {RETRY_AFTER_SECONDS} s",
                            )
                        self.in_use += len(chunk)
                        held += len(chunk)
                        chunks.append(chunk)
            except TimeoutError:
                raise HttpRejection(
                    408,
                    ErrorCode.TIMEOUT,
                    f"the body did not arrive within {self.timeout:g} s (LEDGER_HTTP_BODY_TIMEOUT)",
                ) from None
            body = b"".join(chunks)
            chunks.clear()
            yield body
        finally:
            self.in_use -= held
