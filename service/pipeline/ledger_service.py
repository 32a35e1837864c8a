"""The service's objects as the edges see them: settings, the store, the session queries, the
pipeline, the metrics, the streaming readers' cap and the dashboard's queries."""

from __future__ import annotations

from dataclasses import dataclass

from service.ledger.store import LedgerStore
from service.metrics import Metrics
from service.pipeline.batches import Pipeline
from service.pipeline.dashboard import DashboardQueries
from service.pipeline.queries import ProjectionQueries
from service.settings import Settings
from service.streaming_readers import StreamingReaders

__all__ = ["LedgerService"]


@dataclass(frozen=True, slots=True)
class LedgerService:
    """The objects an edge works with, built once by the composition root (app/bootstrap.py)."""

    settings: Settings
    store: LedgerStore
    queries: ProjectionQueries
    pipeline: Pipeline
    metrics: Metrics
    streaming: StreamingReaders
    dashboard: DashboardQueries
