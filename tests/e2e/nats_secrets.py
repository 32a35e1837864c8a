"""What a guarded nats-server needs, made for a test: an operator, account and user with their
JWTs and a user credentials file (decentralised auth, as `nsc` makes them), and a CA with
server and client certificates for TLS (by the openssl command)."""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import orjson


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(prefix: int) -> Any:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _jwt(issuer: Any, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (v2): ed25519-nkey signed by `issuer`."""
    header = _b64(orjson.dumps({"typ": "JWT", "alg": "ed25519-nkey"}))
    claims = {
        "jti": uuid.uuid4().hex,
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    body = _b64(orjson.dumps(claims))
    signature = _b64(issuer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


@dataclass(frozen=True)
class Credentials:
    config: Path  # nats-server -c
    creds: Path  # the user's credentials file


def operator_setup(folder: Path, port: int) -> Credentials:
    """A server config in operator mode (memory resolver, JetStream enabled for the account)
    and a credentials file of a user of that account."""
    folder.mkdir(parents=True, exist_ok=True)
    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account
    user = _keypair(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "conn": -1, "leaf": -1, "imports": -1, "exports": -1}
    operator_jwt = _jwt(operator, operator.public_key.decode(), "op", {"type": "operator"})
    account_jwt = _jwt(
        operator,
        account.public_key.decode(),
        "ledger",
        {
            "type": "account",
            "limits": {
                **unlimited,
                "wildcards": True,
                "mem_storage": -1,
                "disk_storage": -1,
                "streams": -1,
                "consumer": -1,
            },
        },
    )
    system_jwt = _jwt(operator, system.public_key.decode(), "SYS", {"type": "account", "limits": unlimited})
    user_jwt = _jwt(
        account, user.public_key.decode(), "service", {"type": "user", "pub": {}, "sub": {}, **unlimited}
    )
    config = folder / "server.conf"
    config.write_text(
        f'host: "127.0.0.1"\nport: {port}\njetstream {{ store_dir: "{folder / "js"}" }}\n'
        f"operator: {operator_jwt}\nsystem_account: {system.public_key.decode()}\nresolver: MEMORY\n"
        f"resolver_preload: {{\n  {account.public_key.decode()}: {account_jwt}\n"
        f"  {system.public_key.decode()}: {system_jwt}\n}}\n"
    )
    creds = folder / "user.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    return Credentials(config, creds)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificates(folder: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ledger-test-ca",
        "-keyout", "ca.key", "-out", "ca.pem", cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=ledger-{name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder,
        )  # fmt: skip
    return Certificates(
        *(folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key"))
    )
