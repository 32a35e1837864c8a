"""What every phase gets: the arguments, the temporary folder, a process pool for the paced
publisher, the generated traffic; and the summary's rows."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.figures import Figures
from bench.harness.service import Service, running_service, service_settings
from bench.harness.traffic import Traffic

__all__ = ["Context", "Rows", "cpu_note"]


@dataclass
class Context:
    args: argparse.Namespace
    folder: Path
    pool: concurrent.futures.ProcessPoolExecutor
    traffic: Traffic  # the N events of phases client, naive and service
    paced: Traffic  # the latency phase's events
    loaded: Traffic  # the queries phase's events

    def subfolder(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.folder))

    @contextlib.asynccontextmanager
    async def service(
        self, nats_url: str, database_url: str, phase: str, backend: str
    ) -> AsyncIterator[Service]:
        """`connledger serve` in a folder of its own, with --service-setting and, with
        --profile-dir, py-spy recording it."""
        profile = None
        if self.args.profile_dir is not None:
            profile = self.args.profile_dir / f"{phase}-{backend}-{int(time.time())}.txt"
        settings = service_settings(self.args)
        folder = self.subfolder(f"serve-{phase}-{backend}")
        service = Service(nats_url, database_url, folder, self.args.synchronous, profile, settings)
        async with running_service(service):
            yield service


@dataclass
class Rows:
    """The summary table: backend, measure, value, target, verdict or note."""

    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def add(self, backend: str, what: str, value: str, target: str = "", note: str = "") -> None:
        self.rows.append((backend, what, value, target, note))


def cpu_note(figures: Figures) -> str:
    """Who used the CPU during the measured window, in % of one core (2 cores = 200 %)."""
    if "cpu_service" not in figures:
        return ""
    parts = [f"service {figures['cpu_service']:.0f}%", f"nats-server {figures['cpu_nats']:.0f}%"]
    if figures["cpu_postgres"] >= 1:
        parts.append(f"postgres {figures['cpu_postgres']:.0f}%")
    parts += [f"bench {figures['cpu_bench']:.0f}%", f"other processes {figures['cpu_other']:.0f}%"]
    note = "CPU: " + ", ".join(parts)
    if figures.get("disconnects"):
        note += f"; the service lost its NATS connection {figures['disconnects']:.0f} time(s)"
    return note
