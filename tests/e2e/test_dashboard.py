"""The dashboard in a real headless Chromium: events published over NATS change what the page
shows, without a reload; a session's page draws its history at once, marks vetoed and synthetic
records, and travels back in time; the front page shows what GET /v1/overview answers."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import orjson
import pytest

from tests.e2e.conftest import Service
from tests.e2e.natsutil import publish_all, wait_for_head
from tests.e2e.webdriver import Browser, find_browser
from tests.helpers import DESTROYED, body
from tests.reference import ReferenceFold, Step


@pytest.fixture
def browser() -> Iterator[Browser]:
    found = find_browser()
    if found is None:
        if os.environ.get("LEDGER_TEST_BROWSER") == "required":
            pytest.fail("chromium and chromedriver are required here (LEDGER_TEST_BROWSER=required)")
        pytest.skip(
            "no chromium/chromedriver on this machine (Debian: apt-get install chromium chromium-driver)"
        )
    opened = Browser(*found)
    try:
        yield opened
    finally:
        opened.close()


def lines(*documents: dict[str, object]) -> list[bytes]:
    return [orjson.dumps(d) for d in documents]


@pytest.mark.timeout(180)
async def test_the_dashboard_follows_events_without_a_reload(
    service_factory: type[Service], nats_url: str, browser: Browser
) -> None:
    service = service_factory()
    browser.open(f"{service.http_url}/")
    assert browser.wait_for_text("sessions", "0") == "0"
    browser.run("window.notReloaded = true")

    nc = await nats.connect(nats_url)
    try:
        await publish_all(
            nc,
            lines(
                body("e1", session="room-1", connection="ana"),
                body("e2", session="room-1", connection="bob"),
                body("e3", session="room-2", connection="cy"),
            ),
        )
        assert await wait_for_head(nc, 3) == 3
        assert browser.wait_for_text("connections", "3") == "3"
        assert browser.wait_for_text("sessions", "2") == "2"

        await publish_all(nc, lines(body("e4", "connectionDestroyed", session="room-1", connection="bob")))
        assert browser.wait_for_text("connections", "2") == "2"
        assert browser.run("return window.notReloaded") is True

        # A session's page: its live connections and records, streamed.
        browser.open(f"{service.http_url}/sessions/room-1")
        assert browser.wait_for_text("count", "1") == "1"
        browser.run("window.notReloaded = true")
        await publish_all(nc, lines(body("e5", session="room-1", connection="dee", data="name=Dee")))
        assert browser.wait_for_text("count", "2") == "2"
        table = browser.text("connections")
        assert "ana" in table
        assert "dee" in table
        assert "name=Dee" in table
        assert "bob" not in table
        assert browser.run("return window.notReloaded") is True
        assert "connectionCreated" in browser.text("records")
    finally:
        await nc.close()


async def session_records(api: httpx.AsyncClient, session: str) -> list[dict[str, Any]]:
    answer = await api.get("/v1/events", params={"sessionId": session})
    return [orjson.loads(line) for line in answer.content.splitlines() if line]


def live_at(records: list[dict[str, Any]], position: int) -> set[str]:
    """The connections live at `position`, folded by the reference fold (not the page's)."""
    fold = ReferenceFold()
    for r in records:
        if r["position"] > position:
            break
        connection = r["connection"]
        fold.apply(
            Step(
                r["position"],
                r["sessionId"],
                r["type"],
                connection["connectionId"],
                connection["creationTime"],
                connection["data"],
                r["reason"],
                r["defaultPrevented"],
            )
        )
    return {key[1] for key, row in fold.rows.items() if row[2]}


COUNT_POINTS = "const n = document.querySelectorAll('#chart .point').length;"
SHOWN_CONNECTIONS = (
    "return [...document.querySelectorAll('#connections tr[data-connection]')].map(r => r.dataset.connection)"
)


def travel_to(browser: Browser, index: int) -> None:
    """Move the page's time slider to the `index`-th record, as a person dragging it would."""
    browser.run(
        f"const s = document.getElementById('slider'); s.value = '{index}';"
        "s.dispatchEvent(new Event('input', {bubbles: true}));"
    )


@pytest.mark.timeout(240)
async def test_the_pages_draw_history_mark_vetoes_and_expiry_and_travel_in_time(
    service_factory: type[Service], nats_url: str, browser: Browser
) -> None:
    # Recorders are vetoed by the built-in hook; connections live for more than an hour are
    # destroyed by expiry.
    service = service_factory(LEDGER_IGNORE_DATA_PATTERN="role=recorder", LEDGER_MAX_CONNECTION_AGE="3600")
    base = service.http_url
    now = int(time.time() * 1000)
    session = "room-9"

    def event(event_id: str, connection: str, **kw: Any) -> dict[str, Any]:
        return body(
            event_id, session=session, connection=connection, creation_time=kw.pop("created", now), **kw
        )

    nc = await nats.connect(nats_url)
    api = httpx.AsyncClient(base_url=base, timeout=30)
    try:
        await publish_all(
            nc,
            lines(
                event("e1", "ana"),
                event("e2", "bob"),
                event("e3", "rec-1", data="role=recorder"),
                event("e4", "old", created=now - 2 * 3600 * 1000),
                event("e5", "bob", type_=DESTROYED),
                event("e6", "cy"),
                body("e7", session="room-2", connection="zed", creation_time=now),
            ),
        )
        js = nc.jetstream()
        await js.publish(f"connections.{session}.connectionCreated", b"{not json")
        assert await wait_for_head(nc, 7) >= 7
        # Expiry destroys "old" within a pass (at most 10 s).
        for _ in range(150):
            history = await session_records(api, session)
            if any(r["origin"] == "expiry" for r in history):
                break
            await asyncio.sleep(0.2)
        assert [r["origin"] for r in history].count("expiry") == 1
        vetoed = [r["position"] for r in history if r["defaultPrevented"]]
        expired = [r["position"] for r in history if r["origin"] == "expiry"]
        assert len(vetoed) == 1

        # The session's page: its history drawn the moment it opens, one point a record, and a
        # mark on the vetoed and on the synthetic record.
        browser.open(f"{base}/sessions/{session}")
        points = browser.wait_until(f"{COUNT_POINTS} return n >= {len(history)} && n")
        assert points == len(history)
        drawn = browser.run(
            "return [...document.querySelectorAll('#chart .point')].map(p => Number(p.dataset.position))"
        )
        assert drawn == [r["position"] for r in history]
        marks = (
            "return [...document.querySelectorAll('#chart .mark.{}')].map(m => Number(m.dataset.position))"
        )
        assert browser.run(marks.format("vetoed")) == vetoed
        assert browser.run(marks.format("expiry")) == expired
        assert browser.text("records-total") == str(len(history))
        assert browser.text("vetoed-total") == "1"
        assert browser.text("synthetic-total") == "1"
        answer = (await api.get(f"/v1/sessions/{session}")).json()
        assert browser.wait_for_text("count", str(answer["count"])) == str(answer["count"]) == "2"
        assert set(browser.run(SHOWN_CONNECTIONS)) == {c["connectionId"] for c in answer["connections"]}
        legend = browser.run("return document.querySelector('.legend').textContent")
        assert "vetoed" in legend
        assert "expiry" in legend

        # Live: a record extends the chart, a vetoed one is marked as it comes.
        browser.run("window.notReloaded = true")
        await publish_all(nc, lines(event("e8", "dee"), event("e9", "rec-2", data="role=recorder")))
        grown = browser.wait_until(f"{COUNT_POINTS} return n >= {len(history) + 2} && n")
        assert grown == len(history) + 2
        history = await session_records(api, session)
        assert browser.run(marks.format("vetoed")) == [
            r["position"] for r in history if r["defaultPrevented"]
        ]
        assert browser.wait_for_text("count", "3") == "3"
        assert browser.run("return window.notReloaded") is True

        # The slider back to a moment: the table shows the set at that position, as folded from
        # the records here.
        for index in (1, 2, 4, len(history) - 3):
            position = history[index]["position"]
            travel_to(browser, index)
            title = f"Connections at position {position}"
            assert browser.wait_for_text("connections-title", title) == title
            expected = live_at(history, position)
            wanted = json.dumps(json.dumps(sorted(expected), separators=(",", ":")))
            shown = browser.wait_until(
                f"const c = ({SHOWN_CONNECTIONS.removeprefix('return ')}); "
                f"return JSON.stringify(c.sort()) === {wanted} && c"
            )
            assert shown, (index, expected)
            assert set(shown) == expected
        assert live_at(history, history[1]["position"]) == {"ana", "bob"}
        # And back to live.
        browser.run("document.getElementById('live-button').click()")
        assert browser.wait_for_text("connections-title", "Live connections") == "Live connections"
        assert set(browser.run(SHOWN_CONNECTIONS)) == live_at(history, history[-1]["position"])

        # The front page: what GET /v1/overview answers.
        browser.open(f"{base}/")
        overview: dict[str, Any] = {}
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            overview = (await api.get("/v1/overview", params={"minutes": 60, "buckets": 60})).json()
            seen = browser.run(
                "return {"
                "vetoes: document.getElementById('vetoes').textContent,"
                "rejections: document.getElementById('rejections').textContent,"
                "records: document.getElementById('records').textContent,"
                "synthetic: document.getElementById('synthetic').textContent,"
                "position: document.getElementById('overview').dataset.position,"
                "top: [...document.querySelectorAll('#top tr[data-session]')].map(r => [r.dataset.session, "
                "r.querySelector('.peak').textContent, r.querySelector('.now').textContent]),"
                "codes: [...document.querySelectorAll('#rejections-by-code tr[data-code]')].map(r => "
                "[r.dataset.code, r.querySelector('.count').textContent]),"
                "last: [...document.querySelectorAll('#connections-chart .point')].length,"
                "}"
            )
            if seen["position"] == str(overview["position"]):
                break
            await asyncio.sleep(0.3)
        assert seen["position"] == str(overview["position"])
        assert overview["vetoes"] == 2
        assert overview["synthetic"] == 1
        assert overview["rejections"] == 1
        assert overview["records"] == len(history) + 1  # and zed's, in room-2
        assert seen["vetoes"] == str(overview["vetoes"])
        assert seen["rejections"] == str(overview["rejections"])
        assert seen["records"] == str(overview["records"])
        assert seen["synthetic"] == str(overview["synthetic"])
        assert seen["top"] == [
            [s["sessionId"], str(s["peak"]), str(s["count"])] for s in overview["topSessions"]
        ]
        assert seen["top"][0] == [session, str(max(r["count"] for r in history)), "3"]
        assert seen["codes"] == [["malformed_json", "1"]]
        assert seen["last"] > 0
        assert browser.wait_for_text("connections", "4") == "4"
    finally:
        await api.aclose()
        await nc.close()
