"""RS256 JSON Web Tokens (RFC 7519, RSASSA-PKCS1-v1_5 with SHA-256), signing only: the Vonage
Video API takes one signed with the application's private key. Python's integers do the RSA;
a cryptography library would be a runtime dependency (and a compiled one) for one signature
per request. The private key is read from PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what the Vonage
dashboard hands out) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).

Each signature is blinded (RFC 8017 section 5.1.2's note): the exponentiation works on the
message times a fresh random factor, so its time says nothing about the key."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any, Final, NamedTuple

import orjson

__all__ = ["RsaKey", "load_private_key", "sign"]

# DER of the DigestInfo header for SHA-256 (RFC 8017 section 9.2, note 1).
_SHA256_PREFIX: Final = bytes.fromhex("3031300d060960864801650304020105000420")
_RSA_OID: Final = bytes.fromhex("2a864886f70d010101")


class RsaKey(NamedTuple):
    n: int
    e: int
    d: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _read(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `at`."""
    if at + 2 > len(der):
        raise ValueError("the key's DER ends early")
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(der):
            raise ValueError("the key's DER has a bad length")
        length = int.from_bytes(der[at : at + count], "big")
        at += count
    if at + length > len(der):
        raise ValueError("the key's DER ends early")
    return tag, at, at + length


def _elements(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        element = _read(der, start)
        found.append(element)
        start = element[2]
    return found


def _pkcs1(der: bytes) -> RsaKey:
    tag, start, end = _read(der, 0)
    parts = _elements(der, start, end) if tag == 0x30 else []
    if len(parts) < 4 or any(part[0] != 0x02 for part in parts[:4]):
        raise ValueError("not an RSA private key")
    n, e, d = (int.from_bytes(der[s:t], "big") for _, s, t in parts[1:4])
    return RsaKey(n, e, d)


def load_private_key(pem: str) -> RsaKey:
    """The RSA key in `pem`; ValueError when it holds none."""
    lines = [line.strip() for line in pem.strip().splitlines()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        raise ValueError("not a PEM file")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise ValueError("the PEM body is not base64") from None
    if "RSA PRIVATE KEY" in lines[0]:
        return _pkcs1(der)
    if "PRIVATE KEY" not in lines[0] or "ENCRYPTED" in lines[0]:
        raise ValueError("not an unencrypted private key")
    # PrivateKeyInfo: version, AlgorithmIdentifier (the RSA OID), OCTET STRING of the PKCS#1 key.
    tag, start, end = _read(der, 0)
    parts = _elements(der, start, end) if tag == 0x30 else []
    if len(parts) < 3 or parts[1][0] != 0x30 or parts[2][0] != 0x04:
        raise ValueError("not a PKCS#8 private key")
    algorithm = _elements(der, parts[1][1], parts[1][2])
    if not algorithm or der[algorithm[0][1] : algorithm[0][2]] != _RSA_OID:
        raise ValueError("not an RSA key")
    return _pkcs1(der[parts[2][1] : parts[2][2]])


def _signature(message: bytes, key: RsaKey) -> bytes:
    size = (key.n.bit_length() + 7) // 8
    digest_info = _SHA256_PREFIX + hashlib.sha256(message).digest()
    if size < len(digest_info) + 11:
        raise ValueError("the RSA key is too short")
    encoded = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
    m = int.from_bytes(encoded, "big")
    while True:
        blind = secrets.randbelow(key.n - 2) + 2
        try:
            unblind = pow(blind, -1, key.n)
        except ValueError:  # not invertible: a factor of n, as good as never
            continue
        break
    s = pow(m * pow(blind, key.e, key.n) % key.n, key.d, key.n) * unblind % key.n
    return s.to_bytes(size, "big")


def sign(claims: dict[str, Any], key: RsaKey) -> str:
    header = _b64url(orjson.dumps({"alg": "RS256", "typ": "JWT"}))
    signing_input = f"{header}.{_b64url(orjson.dumps(claims))}"
    return f"{signing_input}.{_b64url(_signature(signing_input.encode('ascii'), key))}"
