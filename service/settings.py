"""LEDGER_* settings, read from the environment (and a `.env` file, if present)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ConfigurationError
from service.redact import mask_secrets

__all__ = ["Settings", "load_settings", "settings_help"]

PREFIX = "LEDGER_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore", frozen=True)

    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the ledger database, e.g. postgresql+asyncpg://user@host/db "
        "(default: SQLite at <var dir>/ledger.db)",
    )
    var_dir: Path = Field(Path("var"), description="Folder for the embedded database and NATS data")
    nats_url: str = Field(
        "", description="NATS server URL(s), comma-separated (default: start the bundled nats-server)"
    )
    nats_user: str = Field("", description="NATS user name (with LEDGER_NATS_PASSWORD)")
    nats_password: str = Field("", description="NATS password")
    nats_token: str = Field("", description="NATS authentication token")
    # Files, checked at start: nats-py reads a credentials file only when the server asks for
    # a signature, so a wrong path would otherwise go unnoticed against a server without auth.
    nats_creds: FilePath | None = Field(None, description="NATS credentials file (JWT and NKey seed)")
    nats_tls_ca: FilePath | None = Field(
        None, description="CA certificate to verify the NATS server (enables TLS)"
    )
    nats_tls_cert: FilePath | None = Field(None, description="Client certificate for NATS TLS")
    nats_tls_key: FilePath | None = Field(None, description="Client key for NATS TLS")
    nats_port: int = Field(4222, ge=1, le=65535, description="First port tried for the bundled nats-server")
    subject_prefix: str = Field(
        "connections",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Events come in on <prefix>.<sessionId>.<type>",
    )
    connections_stream: str = Field("CONNECTIONS", description="JetStream stream of incoming events")
    ledger_stream: str = Field("LEDGER", description="JetStream stream of ledger records")
    consumer_name: str = Field(
        "connection-ledger", description="Durable pull consumer shared by every instance"
    )
    fetch_timeout: float = Field(0.5, gt=0, description="Seconds a fetch waits for the first message")
    ingest_ack_wait: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="Seconds JetStream waits for a delivered event's acknowledgement before it "
        "delivers it again (the consumer's ack_wait); a batch still being worked on (hooks, a commit "
        "waiting for the writer lock) is told 'in progress' every third of it",
    )
    http_host: str = Field("127.0.0.1", description="HTTP listen address")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP listen port")
    http_token: str = Field("", description="Bearer token required for HTTP writes (POST); empty: none")
    http_token_for_reads: bool = Field(False, description="Require LEDGER_HTTP_TOKEN for HTTP reads too")
    hooks: str | None = Field(
        None,
        description="Comma-separated hooks by dotted path (pkg.mod:fn) or entry-point name; "
        "unset: every hook registered in the connection_ledger.hooks entry-point group",
    )
    hook_timeout: float = Field(1.0, gt=0, description="Seconds a hook may run before it counts as failed")
    hooks_fail_closed: bool = Field(
        False, description="A failing hook prevents the default action (default: it goes ahead)"
    )
    ignore_data_pattern: re.Pattern[str] | None = Field(
        None,
        description="Regular expression: connections whose data matches it are recorded but not "
        "counted (the built-in ignore-by-data hook, run first unless LEDGER_HOOKS places it)",
    )
    relay_mode: Literal["process", "inline", "off"] = Field(
        "process",
        description="Where serve runs the relay: process (a child process, on a core of its own), "
        "inline (in the serve process), off (another process relays: connledger relay)",
    )
    # Under a backlog, an append's fixed costs (round trips, the index pages every batch
    # touches, the commit's flush) are shared by this many events: 10,000 took 31,000-33,000
    # events/s into PostgreSQL where 2,000 took 23,000, and 27,000 into SQLite where 2,000 took
    # 22,000 (bench/ingest_nats.py, alternating runs). A light load is appended as it arrives,
    # whatever this is. The price: the writer lock held for a few hundred milliseconds per
    # batch under a backlog, and two batches of memory.
    batch_size: int = Field(
        10_000,
        ge=1,
        le=50_000,
        description="Most events appended in one transaction: a backlog is taken this many at a "
        "time, a light load as it arrives",
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "FULL", description="SQLite synchronous pragma: FULL survives power loss, NORMAL is faster"
    )
    follow_interval: float = Field(
        0.05,
        gt=0,
        le=60,
        description="Seconds between the in-memory counts' looks for other instances' commits",
    )
    max_streaming_readers: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Clients streaming history at once (GET /v1/events, /v1/rejected, SSE, NATS "
        "ledger.replay); past it, 503 with Retry-After (HTTP) or a busy end marker (NATS)",
    )
    stream_stall_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds an HTTP streaming client (NDJSON, SSE) may take to accept the next "
        "chunk before it is disconnected, freeing its place",
    )
    min_position_wait: float = Field(
        5.0, ge=0, description="Seconds a query with minPosition waits for the ledger to catch up"
    )

    @field_validator("ignore_data_pattern", mode="before")
    @classmethod
    def _empty_pattern_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'ledger.db').as_posix()}"

    @property
    def hook_names(self) -> list[str] | None:
        if self.hooks is None:
            return None
        return [name.strip() for name in self.hooks.split(",") if name.strip()]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value raises ConfigurationError naming it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{name}: {error['msg']} (got {mask_secrets(repr(error.get('input')))})")
        raise ConfigurationError("invalid setting: " + "; ".join(problems)) from None


def settings_help() -> str:
    # "\b" keeps click from rewrapping the list.
    lines = ["\b", "Settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        lines.append(f"  {PREFIX}{name.upper():<22} {field.description or ''}")
    return "\n".join(lines)
