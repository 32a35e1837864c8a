"""Benchmarks (scripts run from the checkout, not part of the wheel) and the harness they share
with the end-to-end tests."""
