"""HTTP figures: `GET /v1/sessions/{id}/count` under load while ingest runs, and
`GET /v1/events` streaming speed, each beside a baseline measured in the same run.

    .venv/bin/python bench/http_bench.py [--backend sqlite|postgresql] [--events 200000] [--seconds 10]

It starts its own nats-server and `connledger serve` (fresh database), loads --events events,
then measures:

1. count requests with wrk (Debian's `wrk`; 2 threads, 32 connections) for --seconds while
   `connledger simulate` publishes 1,000 events/s into the same service; requests/s and the
   latency percentiles wrk reports. Baseline: the same wrk against a bare uvicorn app that
   answers a constant JSON body (this machine's ceiling for one Python HTTP process).
2. `GET /v1/events` of the whole ledger, read by curl and counted: records/s. Baseline: `connledger
   replay > /dev/null` of the same ledger (the store's own read speed, no HTTP).

Targets: count >= 3,000 requests/s with p99 printed; events >= 150,000 records/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness.databases import PostgresBackend, add_database_arguments, postgres_server  # noqa: E402
from bench.harness.nats_server import (  # noqa: E402
    free_port,
    jetstream_arguments,
    start_nats_server,
    stop_process,
    wait_for_port,
)
from bench.harness.wrk import require_wrk, run_wrk_sync  # noqa: E402
from service.simulation.traffic import generate  # noqa: E402

BIN = Path(sys.executable).parent


BARE_APP = """
import orjson
from fastapi import FastAPI
from fastapi.responses import Response
app = FastAPI()
@app.get("/count")
async def count() -> Response:
    body = orjson.dumps({"sessionId": "s", "count": 3, "position": 1})
    return Response(body, media_type="application/json")
"""


async def load(nats_url: str, events: int) -> int:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    unique = set()
    for line in generate(events, seed=5, sessions=max(1, events // 200)):
        body = orjson.loads(line)
        kind = body.get("type") or body.get("event")
        unique.add(body.get("id") or (body["sessionId"], body["connection"]["id"], kind, body["timestamp"]))
        await js.publish_async(f"connections.{body['sessionId']}.{kind}", line)
    await js.publish_async_completed()
    await nc.close()
    return len(unique)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_arguments(parser, both=False)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    require_wrk()
    if shutil.which("curl") is None:
        sys.exit("curl is needed: apt-get install curl")

    work = Path(tempfile.mkdtemp(prefix="ledger-http-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    database = ""
    postgres: PostgresBackend | None = None
    stack = contextlib.ExitStack()
    try:
        nats_port = free_port()
        processes.append(start_nats_server(*jetstream_arguments(work, nats_port), port=nats_port))
        nats_url = f"nats://127.0.0.1:{nats_port}"
        if args.backend == "sqlite":
            database = f"sqlite+aiosqlite:///{work / 'ledger.db'}"
        else:
            postgres = PostgresBackend(stack.enter_context(postgres_server(args.pg_url)), "bench_http")
            database = asyncio.run(postgres.create())
        http_port = free_port()
        env = {
            **os.environ,
            "LEDGER_DATABASE_URL": database,
            "LEDGER_NATS_URL": nats_url,
            "LEDGER_HTTP_PORT": str(http_port),
            "LEDGER_HOOKS": "",
        }
        service = subprocess.Popen(
            [str(BIN / "connledger"), "serve"],
            env=env,
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=(work / "serve.log").open("wb"),
        )
        processes.append(service)
        assert service.stdout is not None
        while not service.stdout.readline().startswith(b"ready"):
            pass
        unique = asyncio.run(load(nats_url, args.events))
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            head = httpx.get(
                f"{base}/v1/sessions/probe/count", params={"minPosition": unique}, timeout=30
            ).json()
            if head["position"] >= unique:
                break
        session = generate(1, seed=5, sessions=max(1, args.events // 200)).__next__()
        session_id = orjson.loads(session)["sessionId"]

        # 1. count under load, beside a bare uvicorn.
        bare_port = free_port()
        (work / "bare.py").write_text(BARE_APP)
        bare = subprocess.Popen(
            [
                str(BIN / "python"),
                "-m",
                "uvicorn",
                "bare:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=work,
        )
        processes.append(bare)
        wait_for_port(bare_port)
        baseline = run_wrk_sync(f"http://127.0.0.1:{bare_port}/count", args.seconds)
        bare.terminate()
        simulate = subprocess.Popen(
            [
                str(BIN / "connledger"),
                "simulate",
                "--rate",
                "1000",
                "--seed",
                "9",
                "--duration",
                str(args.seconds + 5),
            ],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(simulate)
        time.sleep(2)
        counted = run_wrk_sync(f"{base}/v1/sessions/{session_id}/count", args.seconds)
        simulate.wait(60)

        # 2. /v1/events streaming, beside `connledger replay` of the same ledger.
        # Read by curl (in C) and counted here in large chunks: a Python HTTP client would
        # measure itself rather than the service.
        records = 0
        started = time.perf_counter()
        reader = subprocess.Popen(
            ["curl", "-sfN", f"{base}/v1/events?limit={unique}"], stdout=subprocess.PIPE
        )
        assert reader.stdout is not None
        while chunk := reader.stdout.read(1 << 20):
            records += chunk.count(b"\n")
        if reader.wait() != 0 or records != unique:
            sys.exit(f"GET /v1/events failed: curl exit {reader.returncode}, {records} of {unique} records")
        streamed = records / (time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run(
            [str(BIN / "connledger"), "replay", "--limit", str(unique)],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        replayed = unique / (time.perf_counter() - started)

        print(f"\nHTTP on {args.backend}, {unique} records in the ledger, 2 cores")
        print(f"{'figure':<52}{'value':>14}{'baseline':>14}{'ratio':>8}")
        print(
            f"{'GET count, requests/s (ingest at 1,000 ev/s)':<52}{counted['rps']:>14,.0f}"
            f"{baseline['rps']:>14,.0f}{counted['rps'] / baseline['rps']:>8.2f}"
        )
        for p in ("p50", "p90", "p99"):
            print(
                f"{'GET count latency ' + p + ' (ms)':<52}{counted.get(p + '_ms', float('nan')):>14.2f}"
                f"{baseline.get(p + '_ms', float('nan')):>14.2f}"
            )
        print(
            f"{'GET /v1/events, records/s':<52}{streamed:>14,.0f}{replayed:>14,.0f}"
            f"{streamed / replayed:>8.2f}"
        )
        print("baselines: a bare uvicorn answering constant JSON; `connledger replay` (no HTTP)")
    finally:
        for process in reversed(processes):
            stop_process(process, 30)  # SIGTERM: the service drains
        if postgres is not None and database:
            asyncio.run(postgres.drop(database))
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
