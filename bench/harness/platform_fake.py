"""LiveKit's and Vonage Video's lists of live connections, faked for the benchmarks in a process
of their own (asyncio on uvloop, one short-lived connection per request as urllib makes them):
every session's list is computed from its name, so a fake for any number of sessions holds
nothing. tests/platform_fakes.py has the fakes that check tokens and answer what a test scripts.

A session named `<prefix><n>` (n in decimal) lists one connection, `PA_<n>` joined at
EPOCH_MS + n, unless n is a multiple of `empty_every`: then its list is empty, and the
connection the ledger holds is a ghost."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
from collections.abc import Iterator
from urllib.parse import unquote

import orjson

from bench.harness.nats_server import free_port, wait_for_port
from bench.harness.traffic import run_loop

__all__ = ["EPOCH_MS", "connection_id", "fake_platform", "listed"]

EPOCH_MS = 1_732_700_000_000
_VONAGE_PATH = re.compile(rb"^/v2/project/[^/]+/session/([^/]+)/connection$")


def connection_id(n: int) -> str:
    return f"PA_{n:07d}"


def listed(platform: str, session: str, empty_every: int) -> bytes:
    """The platform's answer for `session`, as it writes one."""
    digits = session.rsplit("-", 1)[-1]
    n = int(digits) if digits.isdigit() else -1
    connections = [] if n < 0 or (empty_every and n % empty_every == 0) else [n]
    if platform == "vonage":
        items = [
            {"connectionId": connection_id(c), "connectionState": "Connected", "createdAt": EPOCH_MS + c}
            for c in connections
        ]
        return orjson.dumps({"count": len(items), "items": items})
    participants = [
        {"sid": connection_id(c), "state": "ACTIVE", "joinedAtMs": str(EPOCH_MS + c)} for c in connections
    ]
    return orjson.dumps({"participants": participants} if participants else {})


async def _answer(
    platform: str, empty_every: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, _, rest = head.partition(b"\r\n")
        path = request_line.split(b" ")[1]
        length = 0
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        if platform == "vonage":
            match = _VONAGE_PATH.match(path)
            session = unquote(match.group(1).decode()) if match else None
        else:
            session = orjson.loads(body).get("room") if path.endswith(b"/ListParticipants") else None
        if session is None:
            status, answer = b"404 Not Found", b'{"message":"no such route"}'
        else:
            status, answer = b"200 OK", listed(platform, session, empty_every)
        head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close"
        writer.write(head % (status, len(answer)) + b"\r\n\r\n" + answer)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
        pass
    finally:
        writer.close()


def _serve(platform: str, port: int, empty_every: int) -> None:
    async def main() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _answer(platform, empty_every, reader, writer)

        server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    run_loop(main())


@contextlib.contextmanager
def fake_platform(platform: str, empty_every: int = 0) -> Iterator[str]:
    """The fake `platform` ("livekit" or "vonage") in a child process; its base URL until the end."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(platform, port, empty_every), daemon=True
    )
    process.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.join(10)
