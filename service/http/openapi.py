"""The OpenAPI document of the HTTP API, built without a database, NATS or a running server:
`connledger openapi` prints it, and docs/openapi.json is its checked-in copy."""

from __future__ import annotations

from typing import Any, cast

import orjson

from service.commit_signal import CommitSignal
from service.http.app import create_app
from service.http.context import HttpContext
from service.ledger.store import LedgerStore
from service.metrics import Metrics
from service.pipeline.batches import Pipeline
from service.pipeline.dashboard import DashboardQueries
from service.pipeline.ledger_service import LedgerService
from service.pipeline.live_counts import LiveCounts
from service.pipeline.queries import ProjectionQueries
from service.settings import Settings
from service.streaming_readers import StreamingReaders

__all__ = ["openapi_document", "openapi_json"]


class _Absent:
    """Stands in for a part of the service that describing the routes never uses; using it is
    a mistake, and says which part was reached."""

    def __init__(self, part: str) -> None:
        self._part = part

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"{self._part}.{name} used while only describing the HTTP API")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._part} called while only describing the HTTP API")


def openapi_document() -> dict[str, Any]:
    # The defaults, not the environment: the document is the same wherever it is built. Every
    # platform's secret is set, so that the document shows each webhook route the service has
    # when its platform is configured.
    settings = Settings.model_construct(
        livekit_api_key="key",
        livekit_api_secret="secret",
        twilio_auth_token="token",
        public_url="https://ledger.example.com",
        agora_ncs_secret="secret",
    )
    ledger = LedgerService(
        settings=settings,
        store=cast(LedgerStore, _Absent("store")),
        queries=cast(ProjectionQueries, _Absent("queries")),
        pipeline=cast(Pipeline, _Absent("pipeline")),
        metrics=cast(Metrics, _Absent("metrics")),
        streaming=cast(StreamingReaders, _Absent("streaming")),
        dashboard=cast(DashboardQueries, _Absent("dashboard")),
    )
    context = HttpContext(
        ledger=ledger,
        committed=cast(CommitSignal, _Absent("committed")),
        counts=cast(LiveCounts, _Absent("counts")),
        publisher=None,
        ready=_Absent("ready"),
        asyncapi=_Absent("asyncapi"),
    )
    return create_app(context).openapi()


def openapi_json() -> bytes:
    """The document as docs/openapi.json holds it: indented, keys sorted, a final newline."""
    return orjson.dumps(openapi_document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
