"""NATS authentication and TLS by setting: token, user and password, a credentials file (JWT
and NKey seed), TLS with the server's CA, and mutual TLS. Ingest, the relay (a child process)
and the responders all connect with them. A wrong secret is a clear error."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from bench.harness.nats_server import free_port, jetstream_arguments, start_nats_server, stop_process
from tests.e2e.conftest import Service
from tests.e2e.nats_secrets import certificates, operator_setup
from tests.e2e.natsutil import ask
from tests.helpers import body


@dataclass
class Guarded:
    """A nats-server that lets in only a client with the right secret, and how to pass it:
    the service's settings and nats-py's options."""

    url: str
    settings: dict[str, str]
    client: dict[str, Any]


def _start(flags: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        try:
            return start_nats_server(*flags, port=port, output=output)
        except (RuntimeError, TimeoutError):
            raise AssertionError(f"nats-server {flags} did not start: {log.read_text()[-2000:]}") from None


def _guard(kind: str, folder: Path, port: int) -> tuple[list[str], Guarded]:
    url = f"nats://127.0.0.1:{port}"
    plain = jetstream_arguments(folder, port)
    if kind == "token":
        token = {"LEDGER_NATS_TOKEN": "s3cret"}
        return [*plain, "--auth", "s3cret"], Guarded(url, token, {"token": "s3cret"})
    if kind == "user":
        user = {"LEDGER_NATS_USER": "ledger", "LEDGER_NATS_PASSWORD": "pw"}
        return [*plain, "--user", "ledger", "--pass", "pw"], Guarded(
            url, user, {"user": "ledger", "password": "pw"}
        )
    if kind == "creds":
        made = operator_setup(folder / "operator", port)
        return ["-c", str(made.config)], Guarded(
            url, {"LEDGER_NATS_CREDS": str(made.creds)}, {"user_credentials": str(made.creds)}
        )
    certs = certificates(folder / "tls")
    flags = [*plain, "--tls", "--tlscert", str(certs.server_cert), "--tlskey", str(certs.server_key)]
    context = ssl.create_default_context(cafile=str(certs.ca))
    settings = {"LEDGER_NATS_TLS_CA": str(certs.ca)}
    if kind == "mtls":
        flags += ["--tlsverify", "--tlscacert", str(certs.ca)]
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        settings["LEDGER_NATS_TLS_CERT"] = str(certs.client_cert)
        settings["LEDGER_NATS_TLS_KEY"] = str(certs.client_key)
    return flags, Guarded(url, settings, {"tls": context})


async def _refuses_a_plain_client(url: str) -> bool:
    """True when the server at `url` asks for TLS, or answers a CONNECT without credentials
    with an error. (Spoken by hand: a nats-py connect that fails its TLS handshake leaves its
    socket open.)"""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        info = orjson.loads((await reader.readline()).split(b" ", 1)[1])
        if info.get("tls_required"):
            return True
        writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 10)).startswith(b"-ERR")
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture
def guarded_nats(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Guarded]:
    port = free_port()
    flags, guarded = _guard(request.param, tmp_path / "nats", port)
    process = _start(flags, port, tmp_path / "nats.log")
    try:
        yield guarded
    finally:
        stop_process(process)


@pytest.mark.parametrize("guarded_nats", ["token", "user", "creds", "tls", "mtls"], indirect=True)
async def test_the_service_connects_with_its_settings_and_ingests_relays_and_answers(
    guarded_nats: Guarded, tmp_path: Path
) -> None:
    assert await _refuses_a_plain_client(guarded_nats.url)  # the test's server really is guarded
    database = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    env = {"LEDGER_NATS_URL": guarded_nats.url, "LEDGER_DATABASE_URL": database, **guarded_nats.settings}
    service = Service(env, tmp_path)
    try:
        nc = await nats.connect(guarded_nats.url, **guarded_nats.client)
        try:
            js = nc.jetstream()
            await js.publish("connections.s1.connectionCreated", orjson.dumps(body("e1")))
            answer = await ask(nc, "ledger.sessions.s1.count", {"minPosition": 1})
            assert (answer["count"], answer["position"]) == (1, 1)
            # The relay, a child process, connected with the same settings.
            deadline = time.monotonic() + 30
            while (await js.stream_info("LEDGER")).state.messages < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            record = await js.get_last_msg("LEDGER", "ledger.records.s1.connectionCreated")
            assert orjson.loads(record.data)["id"] == "e1"
        finally:
            await nc.close()
    finally:
        assert service.stop() == 0, service.log.read_text()


@pytest.mark.parametrize("guarded_nats", ["token"], indirect=True)
def test_a_wrong_token_is_a_clear_error(guarded_nats: Guarded, tmp_path: Path) -> None:
    url = guarded_nats.url
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


PASSWORD = "hunter2-" + "x7Q"  # distinctive: found nowhere in a log but where it leaked


@pytest.fixture
def password_nats(tmp_path: Path) -> Iterator[int]:
    """A nats-server that takes user ledger with PASSWORD; its port."""
    port = free_port()
    flags = ["-js", "-sd", str(tmp_path / "js"), "-a", "127.0.0.1", "-p", str(port)]
    process = _start([*flags, "--user", "ledger", "--pass", PASSWORD], port, tmp_path / "nats.log")
    try:
        yield port
    finally:
        stop_process(process)


async def test_passwords_in_the_urls_never_show_in_the_banner_or_the_log(
    password_nats: int, database_url: str, tmp_path: Path
) -> None:
    from sqlalchemy.engine import make_url

    server = f"nats://ledger:{PASSWORD}@127.0.0.1:{password_nats}"
    database = make_url(database_url)
    if database.get_backend_name() == "postgresql":
        # The test server trusts its clients: any password is let in, and must be masked.
        database_url = database.set(password=PASSWORD).render_as_string(hide_password=False)
    service = Service(
        {"LEDGER_NATS_URL": f"{server},{server}", "LEDGER_DATABASE_URL": database_url}, tmp_path
    )
    try:
        nc = await nats.connect(server)
        try:
            await nc.jetstream().publish("connections.s1.connectionCreated", orjson.dumps(body("e1")))
            answer = await ask(nc, "ledger.sessions.s1.count", {"minPosition": 1})
            assert answer["position"] == 1
        finally:
            await nc.close()
    finally:
        assert service.stop() == 0
    banner = "".join(service.banner)
    masked = f"nats://ledger:***@127.0.0.1:{password_nats}"
    assert f"NATS      {masked},{masked}\n" in banner
    database_line = next(line for line in service.banner if line.startswith("database"))
    if database.get_backend_name() == "postgresql":
        assert ":***@" in database_line
    assert PASSWORD not in banner
    assert PASSWORD not in service.log.read_text()


def test_simulate_says_where_it_publishes_and_why_it_cannot_without_the_password(tmp_path: Path) -> None:
    urls = f"nats://ledger:{PASSWORD}@127.0.0.1:1,nats://{PASSWORD}@127.0.0.1:2"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "connledger"), "simulate", "--nats", urls, "--duration", "1"],
        env={**os.environ, "LEDGER_VAR_DIR": str(tmp_path / "var")},
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert "to nats://ledger:***@127.0.0.1:1,nats://***@127.0.0.1:2;" in stderr  # what it tried
    assert "LEDGER_NATS_URL: cannot connect to nats://ledger:***@127.0.0.1:1" in stderr
    assert PASSWORD not in stderr
