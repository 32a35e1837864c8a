"""The versions of nats-py and aiosqlite whose private attributes the service reaches."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from service.driver_internals import SUPPORTED, check_versions
from service.errors import ConfigurationError


def test_the_installed_versions_are_the_supported_ones() -> None:
    check_versions()
    for distribution, minors in SUPPORTED.items():
        assert ".".join(version(distribution).split(".")[:2]) in minors


def test_another_minor_version_is_refused_with_what_to_do() -> None:
    installed = {"nats-py": "2.17.0", "aiosqlite": "0.22.1"}
    with pytest.raises(ConfigurationError) as refused:
        check_versions(installed.__getitem__)
    assert "nats-py 2.17.0" in str(refused.value)
    assert "requirements.lock" in str(refused.value)


def test_a_patch_release_of_a_supported_minor_is_taken() -> None:
    check_versions({"nats-py": "2.16.9", "aiosqlite": "0.21.0"}.__getitem__)
