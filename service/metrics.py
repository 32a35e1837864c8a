"""Prometheus metrics of one service instance, in a registry of its own (built by the
composition root, so tests and several ledgers in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.appended = Counter("ledger_events_appended_total", "Events appended to the ledger", registry=r)
        self.prevented = Counter(
            "ledger_events_prevented_total",
            "Appended events whose default action a hook prevented",
            registry=r,
        )
        self.duplicates = Counter("ledger_events_duplicate_total", "Events already in the ledger", registry=r)
        self.rejected = Counter("ledger_events_rejected_total", "Messages rejected", ["code"], registry=r)
        self.ignored = Counter(
            "ledger_events_ignored_total", "Well-formed messages the ledger does not record", registry=r
        )
        self.webhook_ignored = Counter(
            "ledger_webhook_ignored_total",
            "Platform webhooks accepted and not recorded: events that are not joins or leaves",
            ["platform"],
            registry=r,
        )
        self.webhook_signature_failures = Counter(
            "ledger_webhook_signature_failures_total",
            "Platform webhooks refused (401) for a missing or wrong signature",
            ["platform"],
            registry=r,
        )
        self.deferred = Counter(
            "ledger_events_deferred_total",
            "Copies of new events handed back because another process was running their hooks",
            registry=r,
        )
        # Batches and messages ingest acknowledged (duplicates and rejections included): their
        # ratio is the mean batch ingest took from JetStream.
        self.ingest_batches = Counter(
            "ledger_ingest_batches_total", "Batches ingest committed and acknowledged", registry=r
        )
        self.ingest_messages = Counter(
            "ledger_ingest_messages_total",
            "Messages ingest acknowledged (or handed back) after their batch committed",
            registry=r,
        )
        self.batch_size = Histogram(
            "ledger_batch_size",
            "Messages per appended batch",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000),
            registry=r,
        )
        self.append_seconds = Histogram(
            "ledger_append_seconds",
            "Time to append and commit one batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.hook_seconds = Histogram(
            "ledger_hook_seconds",
            "Time all hooks took for one event",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.hook_failures = Counter(
            "ledger_hook_failures_total", "Hook calls that raised or timed out", ["hook"], registry=r
        )
        self.synthetic_events = Counter(
            "ledger_synthetic_events_total",
            "Events the ledger appended itself (expiry, reconcile), vetoed ones included",
            ["origin"],
            registry=r,
        )
        self.ghosts_found = Counter(
            "ledger_ghosts_found_total",
            "Connections found wrong in the ledger: live too long (expiry), or live in the ledger "
            "and gone from the platform, or the other way round (reconcile)",
            ["origin"],
            registry=r,
        )
        self.reconcile_runs = Counter(
            "ledger_reconcile_runs_total",
            "Reconciliation passes: one look at each active session of the platform",
            ["platform"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "ledger_reconcile_errors_total",
            "Sessions whose look failed (an HTTP error, an unknown session, an answer that is not a "
            "list); nothing is done to them until two looks in a row succeed",
            ["platform"],
            registry=r,
        )
        self.head = Gauge("ledger_head_position", "Ledger head position seen by this instance", registry=r)
        self.relayed = Gauge(
            "ledger_relay_position", "Last position published to the LEDGER stream", registry=r
        )
        self.relay_lag = Gauge("ledger_relay_lag", "Head position minus relayed position", registry=r)
        self.relay_lease_held = Gauge(
            "ledger_relay_lease_held",
            "1 while this instance's relay holds the relay lease (publishes to LEDGER), else 0",
            registry=r,
        )
        self.relay_refused = Gauge(
            "ledger_relay_refused_position",
            "Position of a record the LEDGER stream refused for good, which stopped this instance's "
            "relay (0: none)",
            registry=r,
        )
        self.consumer_pending = Gauge(
            "ledger_consumer_pending", "Messages waiting in the CONNECTIONS consumer", registry=r
        )
        self.publish_failures = Counter(
            "ledger_publish_failures_total",
            "Notices not published after a commit: rejected (ledger.rejected.<code>) or head "
            "(ledger.head); the batch is acknowledged all the same",
            ["notice"],
            registry=r,
        )
        self.transient_failures = Counter(
            "ledger_transient_failures_total",
            "Steps of ingest retried because the database was unavailable",
            registry=r,
        )

        self.streaming_readers = Gauge(
            "ledger_streaming_readers", "Clients streaming history now (HTTP and NATS)", registry=r
        )
        self.streaming_refused = Counter(
            "ledger_streaming_readers_refused_total",
            "Streaming readers refused past LEDGER_MAX_STREAMING_READERS",
            ["edge"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
