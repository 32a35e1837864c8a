"""Passwords (and NATS tokens) in URLs are masked wherever a URL is shown."""

from __future__ import annotations

import pytest

from service.errors import ConfigurationError
from service.ledger.database import create_engine
from service.redact import mask_nats_urls, mask_secrets, mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://ledger:hunter2@db:5432/ledger",
            "postgresql+asyncpg://ledger:***@db:5432/ledger",
        ),
        # Unparseable: no "://", an unencoded @ or / in the password, no scheme at all.
        ("postgresql+asyncpg//ledger:hunter2@db/ledger", "postgresql+asyncpg//ledger:***@db/ledger"),
        ("postgresql://ledger:hun@ter2@db/ledger", "postgresql://ledger:***@db/ledger"),
        ("postgresql://ledger:hun/ter2@db/ledger", "postgresql://ledger:***@db/ledger"),
        ("ledger:hunter2@db/ledger", "ledger:***@db/ledger"),
        # Nothing secret: unchanged.
        ("postgresql://ledger@db/ledger", "postgresql://ledger@db/ledger"),
        ("sqlite+aiosqlite:///var/ledger.db", "sqlite+aiosqlite:///var/ledger.db"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://hunter2@nats-1:4222", "nats://***@nats-1:4222"),  # a token
        # A password as a query parameter (asyncpg reads it so), alone or among others.
        ("postgresql://ledger@db/ledger?password=hunter2", "postgresql://ledger@db/ledger?password=***"),
        (
            "postgresql://ledger@db/ledger?ssl=require&PASSWORD=hunter2&x=1",
            "postgresql://ledger@db/ledger?ssl=require&PASSWORD=***&x=1",
        ),
    ],
)
def test_a_url_is_shown_without_its_secret(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert mask_secrets(f"cannot use {url} now") == f"cannot use {shown} now"


def test_every_url_of_a_nats_list_is_masked() -> None:
    urls = "nats://ledger:hunter2@nats-1:4222,nats://hunter2@nats-2:4222,nats://nats-3:4222"
    expected = "nats://ledger:***@nats-1:4222,nats://***@nats-2:4222,nats://nats-3:4222"
    assert mask_nats_urls(urls) == expected
    assert mask_secrets(f"to {urls}: refused") == f"to {expected}: refused"


def test_text_without_a_url_is_left_alone() -> None:
    text = "ingest stopped after 3 batches at 10:30, mail ops@example.com"
    assert mask_secrets(text) == text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg//ledger:hunter2@db/ledger",  # no "://"
        "postgresql://ledger:hunter2@db:port/ledger",  # a port that is not a number
        "ledger:hunter2@db/ledger",  # no scheme
    ],
)
def test_a_database_url_that_does_not_parse_is_an_error_without_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^LEDGER_DATABASE_URL: .* is not a database URL") as raised:
        create_engine(url)
    assert "hunter2" not in str(raised.value)
    assert "ledger:***@db" in str(raised.value)
