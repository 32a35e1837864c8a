"""`connledger reconcile`, the real console script as a subprocess on each backend, against
LiveKit faked on loopback: two looks, a ghost destroyed and a missed join created, and a
summary; settings that name no platform are refused, naming them (CONTRACT section 13)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson

from service.app.bootstrap import open_ledger
from service.settings import load_settings
from tests.contract.test_ledger import records
from tests.helpers import created
from tests.platform_fakes import LIVEKIT_KEY, LIVEKIT_SECRET, FakePlatform, livekit_list, serving

CONNLEDGER = Path(sys.executable).parent / "connledger"


def environment(database_url: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(LEDGER_DATABASE_URL=database_url, LEDGER_VAR_DIR=str(tmp_path / "var"), **settings)
    return env


async def test_reconcile_takes_two_looks_and_appends_what_they_agree_on(
    database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(database_url=database_url, var_dir=tmp_path / "var", hooks="")
    async with open_ledger(settings) as ledger:
        await ledger.pipeline.process([created("e1", "room-1", "ghost"), created("e2", "room-1", "PA_here")])
    with serving(FakePlatform("livekit")) as fake:
        present = livekit_list(("PA_here", 1), ("PA_missed", 1_732_799_000_000))
        fake.script("room-1", present, present)
        env = environment(
            database_url,
            tmp_path,
            LEDGER_LIVEKIT_URL=fake.url,
            LEDGER_LIVEKIT_API_KEY=LIVEKIT_KEY,
            LEDGER_LIVEKIT_API_SECRET=LIVEKIT_SECRET,
        )
        # On a thread: the fake platform answers from this process while the command runs.
        done = await asyncio.to_thread(
            subprocess.run,
            [CONNLEDGER, "reconcile", "--platform", "livekit", "--interval", "0", "--rate", "500", "--json"],
            env=env,
            capture_output=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr.decode()
    report = orjson.loads(done.stdout)
    assert report == {
        "platform": "livekit",
        "sessions": 1,
        "errors": 0,
        "destroyed": 1,
        "created": 1,
        "appended": 2,
    }
    assert fake.asked == ["room-1", "room-1"]
    async with open_ledger(settings) as ledger:
        rows = await records(ledger)
    assert [(r["connection"]["connectionId"], r["origin"]) for r in rows[2:]] == [
        ("ghost", "reconcile"),
        ("PA_missed", "reconcile"),
    ]


def test_reconcile_without_the_platforms_settings_names_them(tmp_path: Path) -> None:
    env = environment(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    done = subprocess.run(
        [CONNLEDGER, "reconcile", "--platform", "vonage"], env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 2
    assert b"LEDGER_VONAGE_APPLICATION_ID" in done.stderr


def test_reconcile_refuses_a_rate_that_is_not_above_0(tmp_path: Path) -> None:
    env = environment(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    done = subprocess.run(
        [CONNLEDGER, "reconcile", "--platform", "livekit", "--rate", "0"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert b"--rate" in done.stderr
