"""The CONNECTIONS and LEDGER streams get their message size and retention limits from the
settings: when the service creates them, and when they exist with other limits (an earlier
release made them with none). A limit the server refuses is an error naming the setting. And
ingest holds no more bytes of delivered, unacknowledged messages than LEDGER_INGEST_MAX_BYTES."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.js.errors
import orjson
import pytest

from service.errors import ConfigurationError
from service.nats.streams import ensure_streams
from service.settings import load_settings
from tests.e2e.conftest import Service, free_port, running_nats_server
from tests.e2e.natsutil import publish_all, wait_for_head
from tests.helpers import body, writer_lock_held

LIMITS = {
    "stream_max_msg_size": 200_000,
    "connections_max_age": 3600.0,
    "connections_max_bytes": 50_000_000,
    "ledger_max_age": 7200.0,
    "ledger_max_bytes": 60_000_000,
}


def _limits(config: object) -> tuple[object, ...]:
    return tuple(getattr(config, name) for name in ("max_msg_size", "max_age", "max_bytes"))


async def test_new_streams_get_the_limits_and_a_larger_message_is_refused(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc, load_settings(**LIMITS))
        js = nc.jetstream()
        connections = (await js.stream_info("CONNECTIONS")).config
        ledger = (await js.stream_info("LEDGER")).config
        assert _limits(connections) == (200_000, 3600.0, 50_000_000)
        assert _limits(ledger) == (200_000, 7200.0, 60_000_000)
        assert connections.subjects == ["connections.>"]
        assert ledger.subjects == ["ledger.records.>"]
        await js.publish("connections.s1.connectionCreated", b"x" * 190_000)
        with pytest.raises(nats.js.errors.APIError, match=r"(?i)maximum"):
            await js.publish("connections.s1.connectionCreated", b"x" * 210_000)
    finally:
        await nc.close()


async def test_streams_with_other_limits_get_the_settings_and_keep_their_messages(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        # As an earlier release made them: no limit at all.
        await js.add_stream(name="CONNECTIONS", subjects=["connections.>"])
        await js.add_stream(name="LEDGER", subjects=["ledger.records.>"])
        for n in range(5):
            await js.publish("connections.s1.connectionCreated", b"%d" % n)
        await ensure_streams(nc, load_settings(**LIMITS))
        connections = await js.stream_info("CONNECTIONS")
        assert _limits(connections.config) == (200_000, 3600.0, 50_000_000)
        assert _limits((await js.stream_info("LEDGER")).config) == (200_000, 7200.0, 60_000_000)
        assert connections.state.messages == 5
        # Already as the settings say: nothing to change, and nothing changes.
        await ensure_streams(nc, load_settings(**LIMITS))
        assert (await js.stream_info("CONNECTIONS")).state.messages == 5
        # Back to the defaults: the settings are where the limits live.
        await ensure_streams(nc, load_settings())
        defaults = load_settings()
        assert _limits((await js.stream_info("CONNECTIONS")).config) == (
            defaults.stream_max_msg_size,
            defaults.connections_max_age,
            defaults.connections_max_bytes,
        )
    finally:
        await nc.close()


@pytest.fixture
def small_jetstream(tmp_path: Path) -> Iterator[str]:
    """A nats-server whose JetStream may use 64 MB of disk."""
    port = free_port()
    config = tmp_path / "small.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp_path / "js"}", max_file_store: 64MB }}\n'
    )
    with running_nats_server("-c", str(config), port=port) as url:
        yield url


async def test_streams_are_created_with_the_replicas_of_the_settings(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc, load_settings(stream_replicas=1))
        js = nc.jetstream()
        assert (await js.stream_info("CONNECTIONS")).config.num_replicas == 1
        assert (await js.stream_info("LEDGER")).config.num_replicas == 1
    finally:
        await nc.close()


async def test_more_replicas_than_a_lone_server_has_is_an_error_naming_the_setting(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        with pytest.raises(ConfigurationError, match=r"LEDGER_STREAM_REPLICAS.*CONNECTIONS"):
            await ensure_streams(nc, load_settings(stream_replicas=3))
    finally:
        await nc.close()


async def test_a_limit_the_server_refuses_is_an_error_naming_the_setting(small_jetstream: str) -> None:
    nc = await nats.connect(small_jetstream)
    try:
        with pytest.raises(ConfigurationError, match=r"LEDGER_CONNECTIONS_MAX_BYTES.*CONNECTIONS"):
            await ensure_streams(nc, load_settings(connections_max_bytes=1024**3))
    finally:
        await nc.close()


def test_an_ingest_budget_below_one_largest_message_names_both_settings() -> None:
    with pytest.raises(ConfigurationError, match=r"LEDGER_INGEST_MAX_BYTES: .*LEDGER_STREAM_MAX_MSG_SIZE"):
        load_settings(ingest_max_bytes=2 * 1024 * 1024, stream_max_msg_size=1024 * 1024)
    assert load_settings(ingest_max_bytes=2 * 1024 * 1024, stream_max_msg_size=256 * 1024)


@pytest.mark.timeout(120)
async def test_serve_applies_the_limits_to_both_streams(
    service_factory: type[Service], nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(name="CONNECTIONS", subjects=["connections.>"])
        service = service_factory(
            LEDGER_STREAM_MAX_MSG_SIZE="300000",
            LEDGER_CONNECTIONS_MAX_AGE="600",
            LEDGER_LEDGER_MAX_BYTES="70000000",
        )
        js = nc.jetstream()
        assert _limits((await js.stream_info("CONNECTIONS")).config)[:2] == (300_000, 600.0)
        assert _limits((await js.stream_info("LEDGER")).config)[::2] == (300_000, 70_000_000)
    finally:
        await nc.close()
    assert service.stop() == 0


@pytest.mark.timeout(180)
async def test_ingest_holds_no_more_than_its_bytes_while_a_commit_waits(
    service_factory: type[Service], nats_url: str, database_url: str
) -> None:
    """While the writer lock is held elsewhere (a rebuild), ingest's batch waits and messages
    pile up in the stream: what it has been delivered and not acknowledged stays within
    LEDGER_INGEST_MAX_BYTES; the rest waits in the stream, and arrives once the lock is free."""
    budget = 1024 * 1024
    service = service_factory(
        LEDGER_STREAM_MAX_MSG_SIZE=str(128 * 1024),
        LEDGER_INGEST_MAX_BYTES=str(budget),
        LEDGER_RELAY_MODE="off",
    )
    lines = [
        orjson.dumps(body(f"e{n}", connection=f"c{n}", data="x" * 900)) for n in range(3000)
    ]  # some 1,050 bytes each as delivered: 3 MB in all
    nc = await nats.connect(nats_url)
    try:
        async with writer_lock_held(database_url):
            await publish_all(nc, lines)
            await asyncio.sleep(2)  # ingest pulls what its budget allows meanwhile
            info = await nc.jetstream().consumer_info("CONNECTIONS", "connection-ledger")
            assert 0 < info.num_ack_pending <= budget // 1000
            assert info.num_pending >= len(lines) - budget // 1000
        assert await wait_for_head(nc, len(lines), timeout=120) == len(lines)
    finally:
        await nc.close()
    assert service.stop() == 0
