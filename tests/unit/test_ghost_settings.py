"""The settings of expiry and reconciliation: what goes together is refused apart, naming the
settings, and a key file that holds no RSA key is refused naming LEDGER_VONAGE_PRIVATE_KEY."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app.platform_lists import lister_for
from service.errors import ConfigurationError
from service.settings import load_settings


def test_expiry_and_reconciliation_are_off_by_default() -> None:
    settings = load_settings()
    assert settings.max_connection_age is None
    assert settings.reconcile_interval is None
    assert settings.reconcile_platforms == []
    assert settings.vonage_api_url == "https://video.api.vonage.com"
    assert settings.reconcile_rate == 10.0


@pytest.mark.parametrize("value", [0, -5, 10_001])
def test_the_reconcile_rate_is_above_0_and_at_most_10000(value: float) -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_RECONCILE_RATE"):
        load_settings(reconcile_rate=value)
    assert load_settings(reconcile_rate=2000).reconcile_rate == 2000


def test_the_vonage_application_and_its_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_VONAGE_PRIVATE_KEY"):
        load_settings(vonage_application_id="app")
    key = tmp_path / "private.key"
    key.write_text("x")
    with pytest.raises(ConfigurationError, match="LEDGER_VONAGE_APPLICATION_ID"):
        load_settings(vonage_private_key=key)
    assert load_settings(vonage_application_id="app", vonage_private_key=key).reconcile_platforms == [
        "vonage"
    ]


def test_the_livekit_url_needs_the_key_and_secret() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_LIVEKIT_API_KEY and LEDGER_LIVEKIT_API_SECRET"):
        load_settings(livekit_url="http://lk")
    settings = load_settings(livekit_url="http://lk", livekit_api_key="k", livekit_api_secret="s")
    assert settings.reconcile_platforms == ["livekit"]


def test_a_reconcile_interval_needs_a_platform_to_ask() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_RECONCILE_INTERVAL needs a platform"):
        load_settings(reconcile_interval=60)


@pytest.mark.parametrize("value", [0, -1])
def test_ages_and_intervals_are_positive(value: float) -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_MAX_CONNECTION_AGE"):
        load_settings(max_connection_age=value)


def test_a_key_file_without_an_rsa_key_names_its_setting(tmp_path: Path) -> None:
    key = tmp_path / "private.key"
    key.write_text("not a key\n")
    settings = load_settings(vonage_application_id="app", vonage_private_key=key)
    with pytest.raises(ConfigurationError, match=r"LEDGER_VONAGE_PRIVATE_KEY: .* holds no RSA private key"):
        lister_for(settings, "vonage")


def test_reconciling_with_a_platform_not_configured_names_its_settings() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_LIVEKIT_URL"):
        lister_for(load_settings(), "livekit")


async def test_a_platform_that_does_not_answer_is_a_failed_look() -> None:
    from service.platforms.live_lists import PlatformError

    settings = load_settings(livekit_url="http://127.0.0.1:1", livekit_api_key="k", livekit_api_secret="s")
    with pytest.raises(PlatformError, match="livekit did not answer"):
        await lister_for(settings, "livekit").live("room")
    broken = settings.model_copy(update={"livekit_url": "nothing-like-a-url"})
    with pytest.raises(PlatformError, match="livekit did not answer"):
        await lister_for(broken, "livekit").live("room")
