"""Vonage Video and LiveKit, faked on loopback over real HTTP: each answers its list request as
the platform does, after checking the request's token as the platform would, and answers the
requests with what the test scripted, one answer per request."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from service.platforms import jwt_hs256, jwt_rs256

APPLICATION = "app-1"
LIVEKIT_KEY, LIVEKIT_SECRET = "APIkey", "a-livekit-secret-of-32-characters!"
_SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")

# (status, JSON body, headers) for one request.
Answer = tuple[int, Any, dict[str, str]]


def vonage_key(folder: Path) -> Path:
    path = folder / "vonage-private.key"
    command = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    path.write_bytes(subprocess.run(command, check=True, capture_output=True).stdout)
    return path


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rs256_claims(token: str, key: jwt_rs256.RsaKey) -> dict[str, Any] | None:
    """The claims of an RS256 token whose signature the key's public half verifies, else None."""
    try:
        header, claims, signature = token.split(".")
        size = (key.n.bit_length() + 7) // 8
        digest = _SHA256_PREFIX + hashlib.sha256(f"{header}.{claims}".encode()).digest()
        expected = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
        signed = pow(int.from_bytes(_unb64(signature), "big"), key.e, key.n).to_bytes(size, "big")
        if orjson.loads(_unb64(header)).get("alg") != "RS256" or signed != expected:
            return None
        found: dict[str, Any] = orjson.loads(_unb64(claims))
        return found
    except (ValueError, AttributeError):
        return None


class FakePlatform:
    def __init__(self, platform: str, key: jwt_rs256.RsaKey | None = None) -> None:
        self.platform = platform
        self.key = key
        self.answers: dict[str, list[Answer]] = {}
        self.asked: list[str] = []
        self.refused: list[str] = []
        self.url = ""

    def script(self, session: str, *answers: Answer) -> None:
        self.answers.setdefault(session, []).extend(answers)

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> Answer:
        token = (headers.get("Authorization") or "").removeprefix("Bearer ")
        if self.platform == "vonage":
            prefix = f"/v2/project/{APPLICATION}/session/"
            if method != "GET" or not path.startswith(prefix) or not path.endswith("/connection"):
                return 404, {"message": "no such route"}, {}
            session = path[len(prefix) : -len("/connection")]
            assert self.key is not None
            claims = rs256_claims(token, self.key)
            if claims is None or claims.get("application_id") != APPLICATION or not claims.get("jti"):
                self.refused.append(session)
                return 401, {"message": "invalid token"}, {}
        else:
            if method != "POST" or path != "/twirp/livekit.RoomService/ListParticipants":
                return 404, {"code": "bad_route", "msg": "no such route"}, {}
            session = orjson.loads(body)["room"]
            try:
                claims = jwt_hs256.verify(token, LIVEKIT_SECRET, LIVEKIT_KEY, time.time(), "Authorization")
            except Exception:
                claims = None
            grant = (claims or {}).get("video", {})
            if grant.get("roomAdmin") is not True or grant.get("room") != session:
                self.refused.append(session)
                return 401, {"code": "unauthenticated", "msg": "permissions denied"}, {}
        self.asked.append(session)
        scripted = self.answers.get(session)
        if not scripted:
            return 404, {"code": "not_found", "msg": "requested room does not exist"}, {}
        return scripted.pop(0)


def vonage_list(*connections: tuple[str, int]) -> Answer:
    items = [{"connectionId": c, "connectionState": "Connected", "createdAt": t} for c, t in connections]
    return 200, {"count": len(items), "projectId": APPLICATION, "items": items}, {}


def livekit_list(*participants: tuple[str, int]) -> Answer:
    found = [{"sid": sid, "state": "ACTIVE", "joinedAtMs": str(at)} for sid, at in participants]
    return 200, ({"participants": found} if found else {}), {}


@contextmanager
def serving(fake: FakePlatform) -> Iterator[FakePlatform]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, document, headers = fake.answer(self.command, self.path, self.headers, body)
            raw = orjson.dumps(document)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _handle  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
