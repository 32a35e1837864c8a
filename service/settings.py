"""LEDGER_* settings, read from the environment (and a `.env` file, if present)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ConfigurationError
from service.events import MAX_BODY_BYTES
from service.redact import mask_secrets

__all__ = ["MESSAGE_OVERHEAD", "PREFIX", "Settings", "load_settings"]

PREFIX = "LEDGER_"
# What a delivered message counts for in a pull request's max_bytes beyond what the stream's
# max_msg_size counts (its headers and body): its subject (up to the server's 4 KiB control line)
# and its reply subject (the ack subject, 100-200 bytes).
MESSAGE_OVERHEAD = 8 * 1024


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
    stream_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="Replicas of the CONNECTIONS and LEDGER streams when the service creates them "
        "(3 on a three-node JetStream cluster; an existing stream keeps its own)",
    )
    ledger_stream: str = Field("LEDGER", description="JetStream stream of ledger records")
    # Stream limits: applied when the service creates the streams, and set on streams that
    # exist with others (service/nats/streams.py). JetStream drops a stream's oldest messages
    # past its age or size limit, read or not: size CONNECTIONS for the longest ingest outage
    # to ride out (an event is some 300-500 bytes there).
    stream_max_msg_size: int = Field(
        1024 * 1024,
        ge=2 * MAX_BODY_BYTES,
        le=64 * 1024 * 1024,
        description="Largest message, headers included, the CONNECTIONS and LEDGER streams take, in "
        "bytes; an event past 64 KiB is stored as a too_large rejection if it is within this",
    )
    connections_max_age: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="Seconds CONNECTIONS keeps a message (0: no age limit)",
    )
    connections_max_bytes: int = Field(
        10 * 1024**3,
        ge=-1,
        description="Bytes CONNECTIONS keeps at most, dropping its oldest messages past it (-1: no limit)",
    )
    ledger_max_age: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="Seconds LEDGER keeps a record (0: no age limit; the database keeps every record)",
    )
    ledger_max_bytes: int = Field(
        10 * 1024**3,
        ge=-1,
        description="Bytes LEDGER keeps at most, dropping its oldest records past it (-1: no limit)",
    )
    consumer_name: str = Field(
        "connection-ledger", description="Durable pull consumer shared by every instance"
    )
    fetch_timeout: float = Field(0.5, gt=0, description="Seconds a fetch waits for the first message")
    # Half for the pull feed (what has arrived and what the open pull request may still bring),
    # a quarter for each of the two batches in hand (one being committed, the next prepared):
    # see service/nats/ingest.py.
    ingest_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes of delivered, unacknowledged messages ingest holds at most (the pull "
        "requests' max_bytes); at least 4 times LEDGER_STREAM_MAX_MSG_SIZE and some",
    )
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
    http_body_budget: int = Field(
        256 * 1024 * 1024,
        ge=1001 * MAX_BODY_BYTES,  # one largest request: an array of 1000 events of 64 KiB
        description="Bytes of HTTP request bodies held at once, over every request; past it 503 "
        "with Retry-After",
    )
    http_body_timeout: float = Field(
        30.0, gt=0, description="Seconds a client may take to send a request's body; past it 408"
    )
    http_allowed_hosts: str = Field(
        "",
        description="Host names HTTP answers to while LEDGER_HTTP_TOKEN is unset, comma-separated "
        "(* for any); IP addresses, localhost and LEDGER_HTTP_HOST always are",
    )
    # Other platforms' webhooks (docs/webhooks.md): a platform whose secret is unset has no route.
    livekit_api_key: str = Field(
        "", description="LiveKit API key: the issuer of the tokens that sign LiveKit's webhooks"
    )
    livekit_api_secret: str = Field(
        "",
        description="LiveKit API secret; set (with LEDGER_LIVEKIT_API_KEY), POST /v1/callbacks/livekit "
        "takes LiveKit's signed webhooks",
    )
    twilio_auth_token: str = Field(
        "",
        description="Twilio auth token; set (with LEDGER_PUBLIC_URL), POST /v1/callbacks/twilio takes "
        "Twilio Video's signed status callbacks",
    )
    public_url: str = Field(
        "",
        description="The service's base URL as Twilio calls it (https://ledger.example.com): Twilio "
        "signs this URL and the path",
    )
    agora_ncs_secret: str = Field(
        "",
        description="Agora NCS secret; set, POST /v1/callbacks/agora takes Agora's signed notifications",
    )
    # Reconciliation with a platform's own list of live connections (docs/ghosts.md).
    vonage_api_url: str = Field(
        "https://video.api.vonage.com", description="Base URL of the Vonage Video API, for reconciliation"
    )
    vonage_application_id: str = Field(
        "", description="Vonage application id: whose sessions `connledger reconcile --platform vonage` asks"
    )
    vonage_private_key: FilePath | None = Field(
        None,
        description="The Vonage application's private key (PEM), which signs the RS256 token the "
        "Vonage Video API takes",
    )
    livekit_url: str = Field(
        "",
        description="Base URL of the LiveKit server (https://my.livekit.cloud), for reconciliation with "
        "LEDGER_LIVEKIT_API_KEY and LEDGER_LIVEKIT_API_SECRET",
    )
    reconcile_interval: float | None = Field(
        None,
        gt=0,
        description="Seconds between two reconciliation passes of serve, for each platform configured "
        "(Vonage, LiveKit); off when unset",
    )
    reconcile_rate: float = Field(
        10.0,
        gt=0,
        le=10_000,
        description="Requests a second reconciliation makes at most to a platform's API (serve's passes, "
        "and `connledger reconcile` unless its --rate says otherwise); a Retry-After slows it further",
    )
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
    hook_claim_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds after which another instance may run the hooks of an event whose "
        "claimant has neither appended it nor renewed its claim (it died); claims are renewed "
        "with the batch's in-progress notices",
    )
    # Events no producer sent (docs/ghosts.md): a connection whose leave never came.
    max_connection_age: float | None = Field(
        None,
        gt=0,
        description="Seconds a connection may stay live (from its creationTime, by the wall clock); "
        "an older one gets a connectionDestroyed (reason networkDisconnected, origin expiry). Off "
        "when unset",
    )
    relay_mode: Literal["process", "inline", "off"] = Field(
        "process",
        description="Where serve runs the relay: process (a child process, on a core of its own), "
        "inline (in the serve process), off (another process relays: connledger relay)",
    )
    # Under a backlog, an append's fixed costs (round trips, the index pages every batch
    # touches, the commit's flush) are shared by this many events; bench/ingest_nats.py compares
    # sizes (the README has the figures). A light load is appended as it arrives,
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

    @model_validator(mode="after")
    def _ingest_holds_a_largest_message(self) -> Settings:
        # A pull request for fewer bytes than a message is refused by the server (409 Message
        # Size Exceeds MaxBytes): each batch's share must hold the largest message.
        share = self.ingest_max_bytes // 4
        if share < self.stream_max_msg_size + MESSAGE_OVERHEAD:
            raise ValueError(
                f"LEDGER_INGEST_MAX_BYTES: {self.ingest_max_bytes} leaves a batch {share} bytes, less "
                f"than one message of LEDGER_STREAM_MAX_MSG_SIZE ({self.stream_max_msg_size}) and "
                f"its subjects ({MESSAGE_OVERHEAD}); raise it to at least "
                f"{4 * (self.stream_max_msg_size + MESSAGE_OVERHEAD)} or lower LEDGER_STREAM_MAX_MSG_SIZE"
            )
        return self

    @model_validator(mode="after")
    def _webhook_secrets_come_with_what_they_need(self) -> Settings:
        if self.livekit_api_secret and not self.livekit_api_key:
            raise ValueError(
                "LEDGER_LIVEKIT_API_KEY is required with LEDGER_LIVEKIT_API_SECRET: LiveKit's tokens "
                "name the key that signed them"
            )
        if bool(self.vonage_application_id) != (self.vonage_private_key is not None):
            raise ValueError(
                "LEDGER_VONAGE_APPLICATION_ID and LEDGER_VONAGE_PRIVATE_KEY go together: the key signs "
                "the application's tokens"
            )
        if self.livekit_url and not (self.livekit_api_key and self.livekit_api_secret):
            raise ValueError(
                "LEDGER_LIVEKIT_API_KEY and LEDGER_LIVEKIT_API_SECRET are required with "
                "LEDGER_LIVEKIT_URL: LiveKit's API takes a token they sign"
            )
        if self.reconcile_interval is not None and not self.reconcile_platforms:
            raise ValueError(
                "LEDGER_RECONCILE_INTERVAL needs a platform to ask: set LEDGER_VONAGE_APPLICATION_ID "
                "and LEDGER_VONAGE_PRIVATE_KEY, or LEDGER_LIVEKIT_URL"
            )
        if self.twilio_auth_token and not self.public_url:
            raise ValueError(
                "LEDGER_PUBLIC_URL is required with LEDGER_TWILIO_AUTH_TOKEN: Twilio signs the URL it "
                "calls, so the service must know its own public URL (https://ledger.example.com)"
            )
        if self.public_url and not self.public_url.startswith(("https://", "http://")):
            raise ValueError(f"LEDGER_PUBLIC_URL: {self.public_url!r} is not an http(s) URL")
        return self

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
    def reconcile_platforms(self) -> list[str]:
        """The platforms whose lists reconciliation can ask, as configured."""
        platforms = []
        if self.vonage_application_id and self.vonage_private_key is not None:
            platforms.append("vonage")
        if self.livekit_url and self.livekit_api_key and self.livekit_api_secret:
            platforms.append("livekit")
        return platforms

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
            if not error["loc"]:  # a rule across settings: its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            name = PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{name}: {error['msg']} (got {mask_secrets(repr(error.get('input')))})")
        raise ConfigurationError("invalid setting: " + "; ".join(problems)) from None
