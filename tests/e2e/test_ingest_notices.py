"""Ingest against a real nats-server, in-process, on SQLite and PostgreSQL: a notice that
cannot be published after a commit (`ledger.rejected.<code>`, `ledger.head`) is counted and
logged, and ingest goes on: the batch, committed with its rejections, is acknowledged and not
delivered again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import pytest
from nats.aio.client import Client

from service.app.bootstrap import open_ledger
from service.commit_signal import CommitSignal
from service.nats.ingest import Ingestor
from service.pipeline.ledger_service import LedgerService
from service.settings import Settings, load_settings
from tests.helpers import body


@pytest.fixture
async def nats_settings(database_url: str, nats_url: str, tmp_path: Path) -> Settings:
    return load_settings(database_url=database_url, nats_url=nats_url, var_dir=tmp_path / "var", hooks="")


@pytest.fixture
async def ledger_on(nats_settings: Settings) -> AsyncIterator[LedgerService]:
    async with open_ledger(nats_settings) as ledger:
        yield ledger


async def _settled(nc: Client, settings: Settings) -> Any:
    """The consumer's state once the server has taken the acks in (or after 5 s)."""
    js = nc.jetstream()
    for _ in range(50):
        info = await js.consumer_info(settings.connections_stream, settings.consumer_name)
        if not info.num_ack_pending and not info.num_pending:
            break
        await asyncio.sleep(0.1)
    return info


async def _wait_for(condition: Any, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_notices_that_cannot_be_published_neither_stop_ingest_nor_its_acks(
    ledger_on: LedgerService, nats_settings: Settings, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = ledger_on
    nc = await nats.connect(nats_url)
    publish = nc.publish

    async def refusing(subject: str, payload: bytes = b"", reply: str = "", headers: Any = None) -> None:
        if subject.startswith("ledger."):  # the notices; pull requests go through
            raise nats.errors.OutboundBufferLimitError
        await publish(subject, payload, reply=reply, headers=headers)

    nc.publish = refusing  # type: ignore[method-assign]
    ingestor = Ingestor(nc, ledger.pipeline, nats_settings, CommitSignal())
    running = asyncio.create_task(ingestor.run())
    try:
        js = nc.jetstream()
        await _wait_for(lambda: _stream_exists(nc, nats_settings))
        await js.publish("connections.s1.connectionCreated", b"{broken")
        await js.publish("connections.s1.connectionCreated", orjson.dumps(body("e1")))
        with caplog.at_level(logging.WARNING, logger="service.nats.ingest"):

            async def all_in() -> bool:
                rejected = [r async for page in ledger.store.rejected() for r in page]
                return await ledger.queries.head() == 1 and len(rejected) == 1

            await _wait_for(all_in)
            info = await _settled(nc, nats_settings)
        assert not running.done(), "ingest goes on"
        assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)
        failures = ledger.metrics.publish_failures
        assert failures.labels("rejected")._value.get() == 1
        assert failures.labels("head")._value.get() >= 1
        said = [r.getMessage() for r in caplog.records]
        assert any("rejected notice(s) not published" in line for line in said)
        assert any("head notice(s) not published on ledger.head" in line for line in said)

        # And the next message is taken and acknowledged as usual.
        await js.publish("connections.s1.connectionCreated", orjson.dumps(body("e2", connection="c2")))
        await _wait_for(lambda: _head_is(ledger, 2))
        assert not running.done()
    finally:
        ingestor.stop()
        await asyncio.wait_for(running, 30)
        await nc.close()


async def _stream_exists(nc: Client, settings: Settings) -> bool:
    try:
        await nc.jetstream().consumer_info(settings.connections_stream, settings.consumer_name)
    except Exception:
        return False
    return True


async def _head_is(ledger: LedgerService, position: int) -> bool:
    return await ledger.queries.head() == position
