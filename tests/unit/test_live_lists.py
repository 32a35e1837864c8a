"""The platforms' list requests and answers, and the RS256 tokens Vonage takes (checked
against the openssl command's own verification)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from service.platforms import jwt_hs256, jwt_rs256
from service.platforms.live_lists import (
    Listed,
    PlatformError,
    livekit_answer,
    livekit_request,
    vonage_answer,
    vonage_request,
)

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def rsa_key(tmp_path: Path, kind: str = "genpkey") -> Path:
    path = tmp_path / "private.key"
    if kind == "genpkey":
        command = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    else:  # PKCS#1, as `openssl genrsa -traditional` writes it
        command = ["openssl", "genrsa", "-traditional", "2048"]
    path.write_bytes(subprocess.run(command, check=True, capture_output=True).stdout)
    return path


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@needs_openssl
@pytest.mark.parametrize("kind", ["genpkey", "genrsa"])
def test_rs256_tokens_verify_with_openssl(tmp_path: Path, kind: str) -> None:
    private = rsa_key(tmp_path, kind)
    public = tmp_path / "public.pem"
    subprocess.run(
        ["openssl", "rsa", "-in", private, "-pubout", "-out", public], check=True, capture_output=True
    )
    key = jwt_rs256.load_private_key(private.read_text())
    token = jwt_rs256.sign({"application_id": "app"}, key)
    header, claims, signature = token.split(".")
    assert orjson.loads(unb64(header)) == {"alg": "RS256", "typ": "JWT"}
    (tmp_path / "input").write_text(f"{header}.{claims}")
    (tmp_path / "signature").write_bytes(unb64(signature))
    verified = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            public,
            "-signature",
            tmp_path / "signature",
            tmp_path / "input",
        ],
        capture_output=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize(
    "pem", ["", "not a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"]
)
def test_a_file_without_an_rsa_key_is_refused(pem: str) -> None:
    with pytest.raises(ValueError, match=r"key|PEM|DER"):
        jwt_rs256.load_private_key(pem)


@needs_openssl
def test_the_vonage_request(tmp_path: Path) -> None:
    key = jwt_rs256.load_private_key(rsa_key(tmp_path).read_text())
    request = vonage_request("http://127.0.0.1:9/", "app-1", key, "2_MX40~x", 1_700_000_000)
    assert request.method == "GET"
    assert request.url == "http://127.0.0.1:9/v2/project/app-1/session/2_MX40~x/connection"
    claims = orjson.loads(unb64(request.headers["Authorization"].removeprefix("Bearer ").split(".")[1]))
    assert claims["application_id"] == "app-1"
    assert (claims["iat"], claims["exp"]) == (1_700_000_000, 1_700_000_300)
    assert claims["jti"]


def test_the_livekit_request_names_the_room_the_session_id_was_escaped_from() -> None:
    request = livekit_request("http://lk", "key", "secret", "room~20one", 1_700_000_000)
    assert request.url == "http://lk/twirp/livekit.RoomService/ListParticipants"
    assert request.body is not None
    assert orjson.loads(request.body) == {"room": "room one"}
    token = request.headers["Authorization"].removeprefix("Bearer ")
    claims = jwt_hs256.verify(token, "secret", "key", 1_700_000_000, "Authorization")
    assert claims["video"] == {"roomAdmin": True, "room": "room one"}


def test_answers_are_read_as_the_platforms_write_them() -> None:
    vonage = {
        "count": 2,
        "items": [
            {"connectionId": "a", "connectionState": "Connected", "createdAt": 1},
            {"connectionId": "b", "connectionState": "Connecting", "createdAt": 2},
        ],
    }
    assert vonage_answer(orjson.dumps(vonage)) == {"a": Listed(1, None)}
    livekit = {
        "participants": [
            {"sid": "PA_1", "state": "ACTIVE", "joinedAt": "5", "metadata": "m"},
            {"sid": "PA_2", "state": "ACTIVE", "joinedAtMs": "5001"},
            {"sid": "PA_3", "joinedAt": "5"},
            {"sid": "PA_4", "state": "DISCONNECTED", "joinedAt": "5"},
        ]
    }
    assert livekit_answer(orjson.dumps(livekit)) == {"PA_1": Listed(5000, "m"), "PA_2": Listed(5001, None)}
    assert livekit_answer(b"{}") == {}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"{}",
        b'{"items": {}}',
        b'{"count": 3, "items": []}',
        b'{"items": [{"connectionId": "a"}]}',
    ],
)
def test_a_vonage_answer_that_is_not_a_list_is_an_error_never_an_empty_list(raw: bytes) -> None:
    with pytest.raises(PlatformError):
        vonage_answer(raw)


@pytest.mark.parametrize(
    "raw", [b"nope", b"[]", b'{"participants": {}}', b'{"participants": [{"sid": "x"}]}']
)
def test_a_livekit_answer_that_is_not_a_list_is_an_error(raw: bytes) -> None:
    with pytest.raises(PlatformError):
        livekit_answer(raw)
