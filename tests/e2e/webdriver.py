"""The few W3C WebDriver calls the dashboard test and scripts/screenshots.py need, spoken to
chromedriver over HTTP (no Selenium: a page to open, a script to run and a picture to take are
all we ask of the browser)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from typing import Any

import httpx

from tests.e2e.conftest import free_port, wait_for_port

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> tuple[str, str] | None:
    driver = shutil.which("chromedriver")
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    return (browser, driver) if browser and driver else None


class Browser:
    def __init__(self, browser: str, driver: str, arguments: tuple[str, ...] = ()) -> None:
        port = free_port()
        self.process = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(port)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        options = {
            "binary": browser,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                *arguments,
            ],
        }
        answer = self._call(
            "POST",
            "/session",
            {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}},
        )
        self.session = answer["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, path, json=body)
        value = response.json()["value"]
        if response.status_code >= 400:
            raise RuntimeError(f"webdriver {path}: {value}")
        return value

    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script: str) -> Any:
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def text(self, element_id: str) -> str:
        return str(self.run(f"return document.getElementById({element_id!r}).textContent"))

    def wait_for_text(self, element_id: str, expected: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = self.text(element_id)
            if seen == expected:
                return seen
            time.sleep(0.2)
        return seen

    def wait_until(self, script: str, timeout: float = 30) -> Any:
        """Run `script` (a function body that returns) until what it returns is truthy, or the
        time is up; returns the last answer."""
        deadline = time.monotonic() + timeout
        seen = self.run(script)
        while not seen and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = self.run(script)
        return seen

    def resize(self, width: int, height: int) -> None:
        self._call("POST", f"/session/{self.session}/window/rect", {"width": width, "height": height})

    def screenshot(self) -> bytes:
        """The visible part of the page, as PNG."""
        return base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot"))

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.http.close()
            self.process.terminate()
            self.process.wait(10)
