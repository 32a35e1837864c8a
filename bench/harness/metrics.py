"""The service's Prometheus `/metrics`, scraped and parsed (prometheus_client's own parser)."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "parse", "scrape", "value"]

# A sample's value by its name and labels, e.g. ("ledger_ingest_batches_total", ()) or
# ("ledger_events_rejected_total", (("code", "bad_json"),)).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _get(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode()


async def scrape(http_url: str) -> Samples:
    """GET `http_url`/metrics, parsed (in a thread: this is the benchmark's event loop)."""
    return parse(await asyncio.to_thread(_get, f"{http_url}/metrics", 10))


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; nan if the service has no such sample."""
    return samples.get((name, tuple(sorted(labels.items()))), float("nan"))
