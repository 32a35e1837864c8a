"""wrk (Debian's `wrk`, 4.x): a load of one URL, or of pre-built requests cycled through by
`replay_requests.lua` (beside this file), with the summary read back: requests/s, latency
percentiles, non-2xx answers and, for the replayed requests, how many were sent and answered 2xx."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bench.harness.figures import Figures

__all__ = [
    "REPLAY_SCRIPT",
    "http_request",
    "parse_summary",
    "require_wrk",
    "run_wrk",
    "run_wrk_sync",
    "write_requests",
]

REPLAY_SCRIPT = Path(__file__).resolve().parent / "replay_requests.lua"
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")


def parse_summary(out: str) -> Figures:
    """rps, p50_ms / p90_ms / p99_ms (from --latency), non2xx (0 when wrk does not mention it),
    socket_errors; and, from replay_requests.lua's last line, sent, ok (2xx), pool."""
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    figures = {"rps": float(found.group(1))}
    for label in ("50", "90", "99"):
        match = re.search(rf"^\s+{label}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", out, re.MULTILINE)
        if match:
            figures[f"p{label}_ms"] = float(match.group(1)) * _UNITS_MS[match.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    figures["socket_errors"] = float(sum(int(n) for n in errors.groups())) if errors else 0.0
    replayed = re.search(r"^replay: sent (\d+) ok (\d+) pool (\d+)$", out, re.MULTILINE)
    if replayed:
        figures |= dict(zip(("sent", "ok", "pool"), map(float, replayed.groups()), strict=True))
    return figures


def _argv(
    url: str, seconds: float, connections: int, threads: int, script: Path | None, script_args: Sequence[str]
) -> list[str]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    if script_args:
        argv += ["--", *script_args]
    return argv


async def run_wrk(
    url: str,
    seconds: float,
    connections: int = 32,
    threads: int = 2,
    script: Path | None = None,
    script_args: Sequence[str] = (),
) -> Figures:
    process = await asyncio.create_subprocess_exec(
        *_argv(url, seconds, connections, threads, script, script_args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{err.decode()}{out.decode()}")
    return parse_summary(out.decode())


def run_wrk_sync(url: str, seconds: float, connections: int = 32, threads: int = 2) -> Figures:
    return asyncio.run(run_wrk(url, seconds, connections, threads))


def http_request(method: str, path: str, host: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 request as it goes on the wire (kept alive: wrk reuses its connections)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def write_requests(path: Path, requests: Iterable[bytes]) -> int:
    """Whole HTTP/1.1 requests (request line, headers, body), each written as its length in
    decimal, a newline, then its bytes: what replay_requests.lua reads. How many."""
    count = 0
    with path.open("wb") as out:
        for request in requests:
            out.write(b"%d\n" % len(request))
            out.write(request)
            count += 1
    return count
