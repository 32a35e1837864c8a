"""The composition root and the processes it runs: building the service's objects from the
settings (bootstrap), `serve`, the relay as a program and as `serve`'s child, sampled gauges."""
