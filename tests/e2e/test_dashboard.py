"""The dashboard in a real headless Chromium: events published over NATS change what the page
shows, without a reload."""

from __future__ import annotations

import os
from collections.abc import Iterator

import nats
import orjson
import pytest

from tests.e2e.conftest import Service
from tests.e2e.natsutil import publish_all, wait_for_head
from tests.e2e.webdriver import Browser, find_browser
from tests.helpers import body


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
