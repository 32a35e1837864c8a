"""`connledger simulate --platform`: the real console script sends a platform's webhooks over
HTTP, signed with the secret in its environment, to the URL it is given."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from service.platforms import agora

CONNLEDGER = Path(sys.executable).parent / "connledger"
SECRET = "simulated-ncs-secret"


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers.get("Agora-Signature-V2", ""), body))
        answer = b'{"accepted": 1}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _simulate(tmp_path: Path, url: str, **env_extra: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(env_extra)
    args = ["simulate", "--platform", "agora", "--url", url, "--rate", "40", "--duration", "1", "--seed", "5"]
    return subprocess.run(
        [str(CONNLEDGER), *args], env=env, cwd=tmp_path, capture_output=True, timeout=60, check=False
    )


def test_simulate_sends_signed_agora_notifications(receiver: str, tmp_path: Path) -> None:
    result = _simulate(tmp_path, receiver, LEDGER_AGORA_NCS_SECRET=SECRET)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert len(_Recorder.received) >= 10
    for path, signature, body in _Recorder.received:
        assert path == "/v1/callbacks/agora"
        assert signature == agora.signature(body, SECRET)


def test_simulate_without_the_platform_secret_names_it(receiver: str, tmp_path: Path) -> None:
    result = _simulate(tmp_path, receiver)
    assert result.returncode != 0
    assert b"LEDGER_AGORA_NCS_SECRET" in result.stderr
    assert _Recorder.received == []
