"""The NATS edge: JetStream ingest, the ledger relay, request/reply queries and replay, and the
bundled nats-server for the embedded default."""
