"""NATS credential and TLS settings: a file that is not there, or not what it should be, is an
error naming its setting before anything connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigurationError
from service.nats.connect import connect
from service.settings import load_settings


@pytest.mark.parametrize("name", ["nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key"])
def test_a_missing_file_names_its_setting(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"LEDGER_{name.upper()}: Path does not point to a file"):
        load_settings(**{name: tmp_path / "nowhere.pem"})


async def test_a_ca_file_that_holds_no_certificate_names_its_setting(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match=r"LEDGER_NATS_TLS_CA: cannot read .* as PEM certificates"):
        await connect(load_settings(nats_tls_ca=junk), "nats://127.0.0.1:1")


async def test_a_client_certificate_that_does_not_load_names_its_settings(tmp_path: Path) -> None:
    junk = tmp_path / "client.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="LEDGER_NATS_TLS_CERT / LEDGER_NATS_TLS_KEY: cannot load"):
        await connect(load_settings(nats_tls_cert=junk), "nats://127.0.0.1:1")


async def test_a_connect_error_never_shows_a_password_or_token_of_the_urls() -> None:
    urls = "nats://ledger:hunter2@127.0.0.1:1,nats://s3cr3ttoken@127.0.0.1:2"
    with pytest.raises(ConfigurationError) as raised:
        await connect(load_settings(), urls)
    message = str(raised.value)
    assert message.startswith("LEDGER_NATS_URL: cannot connect to ")
    assert "nats://ledger:***@127.0.0.1:1,nats://***@127.0.0.1:2" in message
    assert "hunter2" not in message
    assert "s3cr3ttoken" not in message


def test_a_setting_error_never_shows_a_password_it_quotes() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_NATS_PORT") as raised:
        load_settings(nats_port="nats://ledger:hunter2@127.0.0.1:4222")
    assert "hunter2" not in str(raised.value)
    assert "ledger:***@" in str(raised.value)
