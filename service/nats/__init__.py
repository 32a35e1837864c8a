"""The NATS edge, a FastStream application (application.py): JetStream ingest, the ledger
relay, request/reply queries and replay, its AsyncAPI document, and the bundled nats-server for
the embedded default."""
