#!/usr/bin/env python3
"""Take the dashboard's pictures in docs/images/: the front page (dashboard.png) and a session's
page (session.png).

    .venv/bin/python scripts/screenshots.py [--seconds 90] [--out docs/images]

Starts `connledger serve` on a temporary folder (an SQLite ledger and the bundled NATS server,
nothing of ./var touched), sends it realistic traffic for a while (`connledger simulate`, with
recorders vetoed by the built-in hook, a few connections left to expire, and a few messages it
must reject), then opens both pages in headless Chromium through chromedriver and saves them.
Needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.webdriver import Browser, find_browser  # noqa: E402

CONNLEDGER = Path(sys.executable).parent / "connledger"
SEED = 7
SESSIONS = 8
# The simulation's names for its sessions (service/simulation/traffic.py); the session page shown
# is one of them, with a few events of our own in it.
SHOWN = f"2_MX40NTU0NjQ3Mn5-{SEED}-0000003-fg"
# Connections live longer than this (seconds) are destroyed by expiry: only those sent here with
# an old creationTime, as the simulated ones come and go within seconds.
MAX_AGE = "600"
# Events per second in the sessions that run all along, and (events per second, share of the
# run) of the bursts in other sessions, one after the other.
STEADY_RATE = 25
BURST_SESSIONS = 5
BURSTS = [(0, 0.2), (40, 0.2), (90, 0.2), (0, 0.15), (35, 0.25)]
# Seconds the steady traffic goes on after the bursts, while the pictures are taken.
TAIL = 120
WIDTH = 1200


def start_service(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {
        "LEDGER_VAR_DIR": str(folder / "var"),
        "LEDGER_HTTP_PORT": "0",
        "LEDGER_HOOKS": "",
        "LEDGER_IGNORE_DATA_PATTERN": "role=recorder",
        "LEDGER_MAX_CONNECTION_AGE": MAX_AGE,
        "LEDGER_LOG_LEVEL": "WARNING",
    }
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(CONNLEDGER), "serve"], env=env, cwd=folder, stdout=subprocess.PIPE, stderr=log
    )
    assert process.stdout is not None
    banner: list[str] = []
    while not (banner and banner[-1].startswith("ready")):
        line = process.stdout.readline().decode()
        if not line:
            sys.exit(f"serve did not start:\n{(folder / 'serve.log').read_text()}")
        banner.append(line)
    http_url = next(b.split()[1] for b in banner if b.startswith("HTTP"))
    return process, http_url


def nats_url(folder: Path) -> str:
    written = folder / "var" / "nats.url"
    for _ in range(100):
        if written.exists():
            return written.read_text().strip()
        time.sleep(0.1)
    sys.exit("serve wrote no var/nats.url")


async def publish(url: str, bodies: list[bytes | dict[str, object]], session: str = SHOWN) -> None:
    """Publish bodies on the session's subject (a native event's type in the subject, as
    producers do; anything else on connectionCreated, to be rejected)."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for body in bodies:
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            kind = body.get("type", "connectionCreated") if isinstance(body, dict) else "connectionCreated"
            await js.publish(f"connections.{session}.{kind}", raw)
    finally:
        await nc.close()


def event(event_id: str, kind: str, connection: str, created: int, data: str) -> dict[str, object]:
    body: dict[str, object] = {
        "id": event_id,
        "type": kind,
        "sessionId": SHOWN,
        "timestamp": int(time.time() * 1000),
        "connection": {"connectionId": connection, "creationTime": created, "data": data},
    }
    if kind == "connectionDestroyed":
        body["reason"] = "clientDisconnected"
    return body


def simulate(url: str, rate: float, seconds: float, seed: int, sessions: int) -> list[str]:
    """The `connledger simulate` command for a stretch of traffic (its seed names its sessions)."""
    return [
        *(str(CONNLEDGER), "simulate", "--nats", url, "--rate", str(rate)),
        *("--sessions", str(sessions), "--duration", str(seconds), "--seed", str(seed)),
    ]


def traffic(url: str, seconds: float) -> subprocess.Popen[bytes]:
    """Send the traffic for `seconds`; returns the steady part, which goes on (stop it)."""
    now = int(time.time() * 1000)
    hours_ago = now - 2 * 3600 * 1000
    # Guests who joined two hours ago and never left (expiry ends them), a recorder (vetoed), a
    # few messages the ledger cannot take.
    extra: list[bytes | dict[str, object]] = [
        event("shot-old-1", "connectionCreated", "lingering-guest-1", hours_ago, "name=Ines"),
        event("shot-old-2", "connectionCreated", "lingering-guest-2", hours_ago, "name=Tomas"),
        event("shot-rec", "connectionCreated", "recorder-1", now, "role=recorder"),
    ]
    asyncio.run(publish(url, extra))
    # The same sessions all along, and others that come in bursts.
    steady = subprocess.Popen(
        simulate(url, STEADY_RATE, seconds + TAIL, SEED, SESSIONS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for index, (rate, share) in enumerate(BURSTS):
        if rate:
            burst = simulate(url, rate, seconds * share, SEED + 1 + index, BURST_SESSIONS)
            subprocess.run(burst, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            time.sleep(seconds * share)
        bad: list[bytes | dict[str, object]] = [b"{not json"] * (index % 2 + 1)
        if index == 2:
            bad.append({"id": "shot-bad", "type": "connectionCreated", "sessionId": SHOWN})
            bad.append(event("shot-rec-2", "connectionCreated", "recorder-2", now, "role=recorder"))
        asyncio.run(publish(url, bad))
    return steady


def settle(browser: Browser, ready: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if browser.run(f"return Boolean({ready})"):
            return
        time.sleep(0.2)
    sys.exit(f"the page did not draw ({ready})")


def shoot(browser: Browser, path: Path, end: str = "document.documentElement.scrollHeight") -> None:
    """Save the page from its top down to `end` (a script's number: pixels), whole by default."""
    browser.resize(WIDTH, 600)
    frame = 600 - int(browser.run("return window.innerHeight"))
    height = int(browser.run(f"return Math.ceil(Math.min(document.documentElement.scrollHeight, {end}))"))
    browser.resize(WIDTH, height + frame)
    time.sleep(1)
    path.write_bytes(browser.screenshot())
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=90, help="how long to send traffic (default 90)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the pictures go")
    arguments = parser.parse_args()
    found = find_browser()
    if found is None:
        sys.exit("needs chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    arguments.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ledger-screenshots-") as temporary:
        folder = Path(temporary)
        service, http_url = start_service(folder)
        try:
            url = nats_url(folder)
            print(f"serving at {http_url}; sending traffic for {arguments.seconds:g} s ...")
            steady = traffic(url, arguments.seconds)
            browser = Browser(*found, arguments=("--force-device-scale-factor=1", "--hide-scrollbars"))
            try:
                browser.resize(WIDTH, 1000)
                minutes = max(1, round(arguments.seconds / 60 + 0.5))
                browser.open(f"{http_url}/?minutes={minutes}")
                settle(browser, "document.querySelector('#connections-chart .point')")
                settle(browser, "document.querySelector('#top tr[data-session]')")
                time.sleep(2.5)
                # Down to the sixth of the active sessions.
                sixth = "document.querySelector('#rows tr:nth-child(6)')"
                shoot(
                    browser, arguments.out / "dashboard.png", f"{sixth}.getBoundingClientRect().bottom + 28"
                )

                browser.open(f"{http_url}/sessions/{SHOWN}")
                settle(browser, "document.querySelector('#chart .mark.expiry')")
                # Back in time: the slider a third of the way from the end.
                browser.run(
                    "const s = document.getElementById('slider');"
                    "s.value = String(Math.round(Number(s.max) * 0.62));"
                    "s.dispatchEvent(new Event('input'));"
                )
                settle(browser, "document.querySelector('#connections tr[data-connection]')")
                settle(browser, "document.querySelectorAll('#records tr').length >= 6")
                shoot(browser, arguments.out / "session.png")
            finally:
                browser.close()
                steady.terminate()
                steady.wait(30)
        finally:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(60)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
            if service.stdout is not None:
                service.stdout.close()


if __name__ == "__main__":
    main()
