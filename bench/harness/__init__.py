"""What the benchmarks and the end-to-end tests share: a nats-server of their own, fresh
databases, `connledger serve` as a child process, its /metrics, CPU accounting, figures and
tables, generated traffic and the clients that send it.

Each module imports only what it needs, so that the tests can take the nats-server starter
without the benchmark's clients (uvloop, FastStream)."""
