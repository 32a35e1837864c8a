"""Where the CPU went: every process's CPU seconds over a window, from /proc (Linux), and a
child's wall time and peak RSS."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness.clock import now
from bench.harness.figures import Figures

__all__ = ["TIME", "ChildRun", "CpuWindow", "run_child"]


class CpuWindow:
    """CPU seconds every process used between start() and stop(), from /proc (Linux), grouped
    into the service, its nats-server, this benchmark (with its publisher child), PostgreSQL
    (the backends serving our database and the server's own background processes), and
    everything else on the machine, other databases' backends included: on a shared machine
    the last one says how noisy it was. A process that ended inside the window is missed."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self) -> None:
        self.before: dict[int, tuple[str, float]] = {}
        self.started = 0.0

    @classmethod
    def snapshot(cls) -> dict[int, tuple[str, float]]:
        taken: dict[int, tuple[str, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    raw = stat.read().decode(errors="replace")
            except OSError:
                continue
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            if comm.startswith("postgres"):
                # A backend's title names its database: "postgres: user db 127.0.0.1(…) idle".
                with contextlib.suppress(OSError), open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    comm = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            fields = raw[raw.rindex(")") + 2 :].split()
            # comm, then "parent pid|CPU seconds" (the parent tells the service's relay apart)
            taken[int(entry.name)] = (f"{comm}\0{fields[1]}", (int(fields[11]) + int(fields[12])) / cls.TICK)
        return taken

    def start(self) -> None:
        self.before = self.snapshot() if sys.platform == "linux" else {}
        self.started = now()

    def stop(
        self,
        service_pid: int | None,
        nats_pid: int | None,
        database_url: str = "",
        bench_pids: Sequence[int] = (),
    ) -> Figures:
        """In % of one core over the window, by group; `cpu_window` is its seconds."""
        if sys.platform != "linux":
            return {}
        seconds = now() - self.started
        groups = {
            "cpu_service": 0.0,
            "cpu_nats": 0.0,
            "cpu_bench": 0.0,
            "cpu_postgres": 0.0,
            "cpu_other": 0.0,
        }
        mine = {os.getpid(), *(p.pid for p in multiprocessing.active_children()), *bench_pids}
        for pid, (tagged, used) in self.snapshot().items():
            spent = used - self.before.get(pid, (tagged, 0.0))[1]
            comm, _, parent = tagged.partition("\0")
            if service_pid is not None and service_pid in (pid, int(parent or 0)):
                # The service and its children (the relay process).
                groups["cpu_service"] += spent
            elif pid == nats_pid:
                groups["cpu_nats"] += spent
            elif pid in mine:
                groups["cpu_bench"] += spent
            elif comm.startswith("postgres"):
                backend = re.match(r"postgres: (?:\S+: )?\S+ (\S+) [\d.:a-f\[\]]+\(\d+\)", comm)
                ours = backend is None or database_url.endswith("/" + backend.group(1))
                groups["cpu_postgres" if ours else "cpu_other"] += spent
            else:
                groups["cpu_other"] += spent
        # As a share of one core over the window.
        return {key: value / seconds * 100 for key, value in groups.items()} | {"cpu_window": seconds}


TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


@dataclass
class ChildRun:
    seconds: float
    rss_mb: float
    stdout: bytes = b""


def run_child(argv: Sequence[str], env: dict[str, str], cwd: Path, stdout: Any = subprocess.PIPE) -> ChildRun:
    """Run a child to completion: its wall time and its own peak RSS.

    The peak is measured by /usr/bin/time, not by wait4() here: a child forked from this
    process (which may hold hundreds of MB, a baseline's rows) starts with this process's
    pages, and Linux keeps that peak across exec; /usr/bin/time is small when it forks."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        command = [TIME, "-f", "%M", "-o", rss.name, *argv] if TIME else list(argv)
        started = time.perf_counter()
        child = subprocess.run(command, env=env, stdout=stdout, stderr=subprocess.PIPE, cwd=cwd)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            message = child.stderr.decode(errors="replace")
            raise SystemExit(f"{' '.join(argv)} failed ({child.returncode}):\n{message}")
        kib = int(rss.read().split()[-1]) if TIME else 0
    return ChildRun(seconds, kib / 1024, child.stdout or b"")
