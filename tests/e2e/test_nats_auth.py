"""NATS authentication by setting: token and user/password; a wrong one is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from service.nats.embedded import find_binary
from tests.e2e.conftest import Service, free_port, wait_for_port
from tests.e2e.natsutil import ask


@pytest.fixture
def guarded_nats(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str]]]:
    port = free_port()
    flags: list[str] = request.param
    process = subprocess.Popen(
        [str(find_binary()), "-js", "-sd", str(tmp_path / "js"), "-a", "127.0.0.1", "-p", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"nats://127.0.0.1:{port}", flags
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize(
    ("guarded_nats", "settings", "client"),
    [
        (["--auth", "s3cret"], {"LEDGER_NATS_TOKEN": "s3cret"}, {"token": "s3cret"}),
        (
            ["--user", "ledger", "--pass", "pw"],
            {"LEDGER_NATS_USER": "ledger", "LEDGER_NATS_PASSWORD": "pw"},
            {"user": "ledger", "password": "pw"},
        ),
    ],
    indirect=["guarded_nats"],
)
async def test_the_service_authenticates_with_its_settings(
    guarded_nats: tuple[str, list[str]], settings: dict[str, str], client: dict[str, str], tmp_path: Path
) -> None:
    url, _ = guarded_nats
    database = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    service = Service({"LEDGER_NATS_URL": url, "LEDGER_DATABASE_URL": database, **settings}, tmp_path)
    try:
        nc = await nats.connect(url, **client)  # type: ignore[arg-type]
        try:
            assert (await ask(nc, "ledger.sessions.s1.count"))["count"] == 0
        finally:
            await nc.close()
    finally:
        assert service.stop() == 0


@pytest.mark.parametrize("guarded_nats", [["--auth", "s3cret"]], indirect=True)
def test_a_wrong_token_is_a_clear_error(guarded_nats: tuple[str, list[str]], tmp_path: Path) -> None:
    url, _ = guarded_nats
    result = subprocess.run(
        [str(Path(sys.executable).parent / "connledger"), "serve"],
        env={
            **os.environ,
            "LEDGER_NATS_URL": url,
            "LEDGER_NATS_TOKEN": "wrong",
            "LEDGER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        },
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert b"LEDGER_NATS_URL" in result.stderr
    assert b"Traceback" not in result.stderr
