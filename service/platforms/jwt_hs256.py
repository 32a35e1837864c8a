"""HS256 JSON Web Tokens (RFC 7519), the little of them a webhook needs: sign, and verify the
signature, the issuer and the time claims. The standard library is enough for HMAC-SHA256;
a JWT library would be a runtime dependency for forty lines."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from service.platforms.signatures import BadSignature

__all__ = ["LEEWAY_SECONDS", "sign", "verify"]

# Clock skew forgiven on `exp` and `nbf`, as LiveKit's own verifier forgives it.
LEEWAY_SECONDS = 60


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, signing_input: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256).digest()


def sign(claims: dict[str, Any], secret: str) -> str:
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    signing_input = f"{header}.{_b64url(orjson.dumps(claims))}"
    return f"{signing_input}.{_b64url(_mac(secret, signing_input))}"


def verify(token: str, secret: str, issuer: str, now: float, field: str) -> dict[str, Any]:
    """The claims of `token` once its signature, `iss`, `exp` (required) and `nbf` hold at
    `now` (seconds since the epoch); else BadSignature naming the header `field`."""

    def bad(why: str) -> BadSignature:
        return BadSignature(field, f"the {field} header's token {why}")

    parts = token.split(".")
    if len(parts) != 3:
        raise bad("is not a JSON Web Token")
    try:
        header = orjson.loads(_unb64url(parts[0]))
        signature = _unb64url(parts[2])
        claims = orjson.loads(_unb64url(parts[1]))
    except (binascii.Error, ValueError):
        raise bad("is not a JSON Web Token") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise bad("is not signed with HS256")
    # The signature before any claim is believed.
    if not hmac.compare_digest(signature, _mac(secret, f"{parts[0]}.{parts[1]}")):
        raise bad("is not signed with the configured secret")
    if not isinstance(claims, dict):
        raise bad("holds no claims")
    if claims.get("iss") != issuer:
        raise bad("was issued for another API key")
    expires = claims.get("exp")
    if not isinstance(expires, int | float):
        raise bad("has no expiry (exp)")
    if now > expires + LEEWAY_SECONDS:
        raise bad("has expired")
    not_before = claims.get("nbf")
    if not_before is not None and (
        not isinstance(not_before, int | float) or now < not_before - LEEWAY_SECONDS
    ):
        raise bad("is not valid yet (nbf)")
    return claims
