"""The phases of bench/ingest_nats.py, one module each, in the order they run: `client` (a),
`naive` (b), `service`, `latency`, `queries` (with (c)). Each module has NAME, `run(ctx,
backend)` returning its figures, and `report(rows, backend, results, ctx)` adding its lines to
the summary (`results`: the backend's figures of every phase that ran, by NAME)."""
