"""uvicorn, run inside the service's event loop beside ingest and the relay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from service.errors import ConfigurationError
from service.settings import Settings

__all__ = ["HttpServer"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals belong to the service, which drains ingest, relay and HTTP in order; uvicorn
        # would otherwise take SIGTERM/SIGINT over and re-raise them after its own shutdown.
        yield


class HttpServer:
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        config = uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # httptools parses HTTP/1.1 in C: several times the request rate of the pure-Python h11.
            http="httptools",
            loop="none",
            # Open SSE streams never end by themselves: give them a moment, then close them.
            timeout_graceful_shutdown=2,
        )
        self.server = _Server(config)
        self.started = asyncio.Event()
        self.url = ""

    async def _serve(self) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind; run() says so
            await self.server.serve()

    async def run(self) -> None:
        serving = asyncio.create_task(self._serve())
        # uvicorn has no "started" event to await; its flag flips once the sockets listen.
        while not self.server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self.server.started:
            host, port = self.server.servers[0].sockets[0].getsockname()[:2]
            self.url = f"http://{host}:{port}"
        self.started.set()
        await serving
        if not self.url:
            raise ConfigurationError(
                f"LEDGER_HTTP_HOST/LEDGER_HTTP_PORT: cannot listen on "
                f"{self.server.config.host}:{self.server.config.port} (in use?); choose another port"
            )

    def stop(self) -> None:
        self.server.should_exit = True
