"""The JetStream streams the service uses, with the limits its settings give them.

CONNECTIONS (`<prefix>.>`, events in) and LEDGER (`ledger.records.>`, records out) are created
when missing, with LEDGER_STREAM_REPLICAS replicas (on a JetStream cluster, R3 keeps a stream
writable through the loss of one node), `max_msg_size` (LEDGER_STREAM_MAX_MSG_SIZE) and their
retention limits,
`max_age` and `max_bytes` (LEDGER_CONNECTIONS_MAX_AGE / _MAX_BYTES, LEDGER_LEDGER_MAX_AGE /
_MAX_BYTES). Before these settings the streams had no limit at all, and grew until the disk
was full.

A stream that exists with other values of these three gets the settings' values (a stream
update, logged): the settings are where an operator changes them, and a restart applies them.
Nothing else of an existing stream is changed (subjects, storage, retention policy, replicas
are the operator's, and some cannot change at all). Lowering a limit drops the messages past it
at once, oldest first, read or not.

A value nats-server refuses (more storage than JetStream may use, say) stops the start with an
error naming the setting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig

from service.errors import ConfigurationError
from service.settings import Settings
from service.subjects import CONNECTIONS_FILTER, RECORDS_FILTER

__all__ = [
    "connections_stream",
    "ensure_connections_stream",
    "ensure_ledger_stream",
    "ensure_stream",
    "ensure_streams",
    "ledger_stream",
    "streams_problem",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    max_msg_size: int
    max_age: float  # seconds; 0: none
    max_bytes: int  # -1: none
    # The settings behind them, for errors.
    names: str


def connections_stream(settings: Settings) -> tuple[StreamConfig, Limits]:
    config = StreamConfig(
        name=settings.connections_stream,
        subjects=[CONNECTIONS_FILTER.format(prefix=settings.subject_prefix)],
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
    )
    return config, Limits(
        settings.stream_max_msg_size,
        settings.connections_max_age,
        settings.connections_max_bytes,
        "LEDGER_STREAM_REPLICAS, LEDGER_STREAM_MAX_MSG_SIZE, LEDGER_CONNECTIONS_MAX_AGE, "
        "LEDGER_CONNECTIONS_MAX_BYTES",
    )


def ledger_stream(settings: Settings) -> tuple[StreamConfig, Limits]:
    config = StreamConfig(
        name=settings.ledger_stream,
        subjects=[RECORDS_FILTER],
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
    )
    return config, Limits(
        settings.stream_max_msg_size,
        settings.ledger_max_age,
        settings.ledger_max_bytes,
        "LEDGER_STREAM_REPLICAS, LEDGER_STREAM_MAX_MSG_SIZE, LEDGER_LEDGER_MAX_AGE, LEDGER_LEDGER_MAX_BYTES",
    )


def _differs(config: StreamConfig, limits: Limits) -> bool:
    # The server reports "no limit" as -1 (size, bytes) and 0 (age); nats-py may leave a field
    # unset (None) in what it read.
    return (
        (config.max_msg_size if config.max_msg_size is not None else -1) != limits.max_msg_size
        or (config.max_bytes if config.max_bytes is not None else -1) != limits.max_bytes
        or abs((config.max_age or 0.0) - limits.max_age) > 1e-3
    )


def _limited(config: StreamConfig, limits: Limits) -> StreamConfig:
    return config.evolve(max_msg_size=limits.max_msg_size, max_age=limits.max_age, max_bytes=limits.max_bytes)


async def ensure_stream(
    nc: Client, wanted: StreamConfig, limits: Limits, *, update: bool = True
) -> StreamConfig:
    """Create the stream with `limits`, or (with `update`) give an existing one these limits;
    its config."""
    js = nc.jetstream()
    try:
        try:
            info = await js.stream_info(wanted.name or "")
        except nats.js.errors.NotFoundError:
            created = await js.add_stream(_limited(wanted, limits))
            return created.config
        config = info.config
        if not update or not _differs(config, limits):
            return config
        log.info(
            "stream %s: max_msg_size %s -> %d, max_age %s -> %g s, max_bytes %s -> %d (from %s)",
            config.name,
            config.max_msg_size,
            limits.max_msg_size,
            config.max_age,
            limits.max_age,
            config.max_bytes,
            limits.max_bytes,
            limits.names,
        )
        updated = await js.update_stream(_limited(config, limits))
        return updated.config
    except nats.js.errors.APIError as error:
        if isinstance(error, nats.js.errors.ServiceUnavailableError):
            raise
        raise ConfigurationError(
            f"{limits.names}: nats-server refused these limits for the stream {wanted.name} "
            f"({error.description or error}; code {error.err_code}); change them, or the server's "
            "JetStream limits"
        ) from error


async def streams_problem(nc: Client, settings: Settings, seconds: float = 1.0) -> str | None:
    """Why the streams cannot take messages just now (no leader during an election after a
    NATS node died, or no answer), or None when both can."""
    js = nc.jetstream(timeout=seconds)
    for name in (settings.connections_stream, settings.ledger_stream):
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return f"the stream {name} does not exist"
        except (nats.errors.Error, TimeoutError) as error:
            return f"the stream {name} does not answer ({type(error).__name__}): a leader election?"
        if info.cluster is not None and not info.cluster.leader:
            return f"the stream {name} has no leader (an election, after a NATS node died?)"
    return None


async def ensure_streams(nc: Client, settings: Settings) -> None:
    """Both streams, with their limits: before the service says it is ready."""
    await ensure_connections_stream(nc, settings)
    await ensure_stream(nc, *ledger_stream(settings))


async def ensure_connections_stream(nc: Client, settings: Settings) -> None:
    """CONNECTIONS, with the limits of the settings: whoever starts first, serve or ingest."""
    await ensure_stream(nc, *connections_stream(settings))


async def ensure_ledger_stream(nc: Client, settings: Settings) -> None:
    """LEDGER, created with the settings' limits when missing, whoever starts first: serve or
    a relay. An existing stream's limits are serve's to apply at its start (and the
    operator's to change meanwhile), not a relay's to undo as it starts again."""
    await ensure_stream(nc, *ledger_stream(settings), update=False)
