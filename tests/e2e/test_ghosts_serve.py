"""`connledger serve` with LEDGER_MAX_CONNECTION_AGE and LEDGER_RECONCILE_INTERVAL set, on each
backend: a connection past the age is destroyed by expiry, and a ghost LiveKit (faked on
loopback) no longer lists is destroyed by reconciliation, both while serve runs, and serve
drains as usual on SIGTERM (CONTRACT section 13)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from service.app.bootstrap import open_ledger
from service.settings import load_settings
from tests.contract.test_ledger import records
from tests.helpers import created
from tests.platform_fakes import LIVEKIT_KEY, LIVEKIT_SECRET, FakePlatform, livekit_list, serving

CONNLEDGER = Path(sys.executable).parent / "connledger"


@pytest.mark.timeout(180)
async def test_serve_expires_and_reconciles(database_url: str, tmp_path: Path) -> None:
    settings = load_settings(database_url=database_url, var_dir=tmp_path / "var", hooks="")
    now = int(time.time() * 1000)
    async with open_ledger(settings) as ledger:
        await ledger.pipeline.process(
            [created("e1", "old", "c1"), created("e2", "room-1", "ghost", creation_time=now)]
        )
    with serving(FakePlatform("livekit")) as fake:
        for _ in range(100):
            fake.script("room-1", livekit_list())
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(
            LEDGER_DATABASE_URL=database_url,
            LEDGER_VAR_DIR=str(tmp_path / "var"),
            LEDGER_HTTP_PORT="0",
            LEDGER_RELAY_MODE="off",
            LEDGER_HOOKS="",
            LEDGER_MAX_CONNECTION_AGE="3600",
            LEDGER_RECONCILE_INTERVAL="0.3",
            LEDGER_LIVEKIT_URL=fake.url,
            LEDGER_LIVEKIT_API_KEY=LIVEKIT_KEY,
            LEDGER_LIVEKIT_API_SECRET=LIVEKIT_SECRET,
        )
        log = tmp_path / "serve.log"
        with log.open("wb") as output:
            serve = await asyncio.create_subprocess_exec(
                str(CONNLEDGER), "serve", env=env, stdout=output, stderr=output
            )
        try:
            async with open_ledger(settings) as ledger:
                for _ in range(600):
                    assert serve.returncode is None, log.read_text()
                    counts = [(await ledger.queries.count(s))["count"] for s in ("old", "room-1")]
                    if counts == [0, 0]:
                        break
                    await asyncio.sleep(0.1)
                rows = await records(ledger)
        finally:
            serve.send_signal(signal.SIGTERM)
            status = await asyncio.wait_for(serve.wait(), 60)
    assert counts == [0, 0], log.read_text()
    assert status == 0, log.read_text()
    assert sorted((r["sessionId"], r["origin"]) for r in rows[2:]) == [
        ("old", "expiry"),
        ("room-1", "reconcile"),
    ]
