"""The refusal of a webhook whose signature is missing or wrong, and the checks that share it.
Every comparison of a signature is constant-time (hmac.compare_digest): how long a refusal takes
must not tell a forger how much of a guess was right."""

from __future__ import annotations

import base64
import hmac

__all__ = ["BadSignature", "base64_hmac_sha1", "check_equal", "hex_hmac_sha256"]


class BadSignature(Exception):
    """A webhook refused before its body is read: `field` names the header at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_equal(given: str | None, expected: str, field: str) -> None:
    """Raise BadSignature unless the header `field` holds `expected`."""
    if not given:
        raise BadSignature(field, f"the {field} header is required: this route takes signed webhooks only")
    if not hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8")):
        raise BadSignature(field, f"the {field} header does not match the body and the configured secret")


def base64_hmac_sha1(key: str, message: str) -> str:
    # hmac.digest: the one-shot that runs in C, without building an HMAC object.
    return base64.b64encode(hmac.digest(key.encode("utf-8"), message.encode("utf-8"), "sha1")).decode()


def hex_hmac_sha256(key: str, message: bytes) -> str:
    return hmac.digest(key.encode("utf-8"), message, "sha256").hex()
