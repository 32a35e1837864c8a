"""The real `connledger` console script, run as a subprocess on each backend (CONTRACT 6, 7, 8):
import of NDJSON in both body formats with every kind of bad line, the summary and the
stderr report, the rejected store, replay, count, sessions, rebuild, stdin, and the errors a
user sees for a missing file or a bad LEDGER_DATABASE_URL.

stdout is a pipe here, so every command prints JSON (NDJSON for lists)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.engine import make_url

from service.events import vonage_event_id

ROOT = Path(__file__).resolve().parents[2]
CONNLEDGER = Path(sys.executable).parent / "connledger"
TIMEOUT = 60


def _native(event_id: str, type_: str, session: str, connection: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id,
        "type": type_,
        "sessionId": session,
        "timestamp": 1_732_700_000_000,
        "connection": {"connectionId": connection, "creationTime": 1_732_699_990_000, "data": "name=Ana"},
    }
    body.update(extra)
    return body


def _line(document: Any) -> bytes:
    return orjson.dumps(document)


E1 = _line(_native("e1", "connectionCreated", "S1", "a"))
E2 = _line(_native("e2", "connectionCreated", "S1", "b"))
VONAGE = _line(
    {
        "sessionId": "S2",
        "projectId": "4654321",
        "event": "connectionCreated",
        "timestamp": 1_732_700_000_500,
        "connection": {"id": "v1", "createdAt": 1_732_700_000_400, "data": "name=Vo"},
    }
)
VONAGE_ID = vonage_event_id("S2", "v1", "connectionCreated", 1_732_700_000_500)
STREAM_CREATED = _line(
    {
        "sessionId": "S2",
        "projectId": "4654321",
        "event": "streamCreated",
        "timestamp": 1_732_700_000_600,
        "stream": {"id": "st1", "connection": {"id": "v1"}},
    }
)
E3 = _line(_native("e3", "connectionDestroyed", "S1", "a", reason="clientDisconnected"))
E4 = _line(_native("e4", "connectionCreated", "S3", "z"))
E5 = _line(_native("e5", "connectionDestroyed", "S3", "z", reason="networkDisconnected"))
missing_id = _native("x", "connectionCreated", "S1", "m")
del missing_id["id"]

# (line bytes, what becomes of it): None for a blank line, else the outcome or the reject code.
LINES: list[tuple[bytes, str | None]] = [
    (E1, "appended"),  # 1
    (E2, "appended"),  # 2
    (b"", None),  # 3
    (VONAGE, "appended"),  # 4
    (STREAM_CREATED, "ignored"),  # 5
    (E3, "appended"),  # 6
    (b'{"id": "broken", "type": ', "malformed_json"),  # 7
    (_line([_native("arr", "connectionCreated", "S1", "r")]), "invalid_field"),  # 8: an array
    (_line(_native("x1", "connectionMoved", "S1", "m")), "unknown_type"),  # 9
    (_line(missing_id), "invalid_field"),  # 10
    (_line(_native("x2", "connectionCreated", "has.dot", "m")), "invalid_field"),  # 11: sessionId
    (_line(_native("x3", "connectionCreated", "S1", "m", timestamp="yesterday")), "invalid_field"),  # 12
    (_line(_native("x4", "connectionCreated", "S1", "m", reason="clientDisconnected")), "invalid_field"),
    (_line(_native("x5", "connectionCreated", "S1", "m", pad="x" * 70_000)), "too_large"),  # 14
    (b"   \t", None),  # 15: white space only is blank too
    (_line(_native("e1", "connectionCreated", "S1", "a", timestamp=5)), "conflict"),  # 16
    (E2, "duplicate"),  # 17: the same event again, byte for byte
    (E4, "appended"),  # 18
    (E5, "appended"),  # 19
]
EXPECTED_SUMMARY = {"appended": 6, "duplicates": 1, "rejected": 9, "ignored": 1}
ACCEPTED = {None, "appended", "duplicate", "ignored"}
REJECTED_LINES = {n: code for n, (_, code) in enumerate(LINES, 1) if code not in ACCEPTED}
SESSIONS_ALL = [
    {"sessionId": "S1", "count": 1},
    {"sessionId": "S2", "count": 1},
    {"sessionId": "S3", "count": 0},
]


def _environment(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_DATABASE_URL"] = database_url
    env["LEDGER_VAR_DIR"] = str(tmp_path / "var")
    return env


def _connledger(
    env: dict[str, str], cwd: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(CONNLEDGER), *args],
        env=env,
        cwd=cwd,  # a folder of its own: no stray .env, no ./var in the repository
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


def _ndjson(stdout: bytes) -> list[Any]:
    return [orjson.loads(line) for line in stdout.splitlines()]


def test_import_and_every_command_on_the_imported_ledger(database_url: str, tmp_path: Path) -> None:
    env = _environment(database_url, tmp_path)
    source = tmp_path / "events.ndjson"
    # One line ends in CRLF: the line is the same event either way.
    source.write_bytes(
        b"".join(line + (b"\r\n" if n == 18 else b"\n") for n, (line, _) in enumerate(LINES, 1))
    )

    # A small batch size: duplicates and conflicts also meet their originals across batches.
    imported = _ok(_connledger(env, tmp_path, "import", "--batch-size", "4", str(source)))
    assert orjson.loads(imported.stdout) == EXPECTED_SUMMARY
    report = imported.stderr.decode()
    reported = {int(n): code for n, code in re.findall(r"^line (\d+): (\w+)", report, re.MULTILINE)}
    assert reported == REJECTED_LINES, report

    rejected = _ndjson(_ok(_connledger(env, tmp_path, "rejected")).stdout)
    by_line = {int(r["headers"]["Ledger-Import-Line"]): r for r in rejected}
    assert len(rejected) == len(by_line) == len(REJECTED_LINES)
    assert {n: r["code"] for n, r in by_line.items()} == REJECTED_LINES
    for number, item in by_line.items():
        assert base64.b64decode(item["raw"]) == LINES[number - 1][0], number
        assert item["message"]
        assert isinstance(item["receivedAt"], int)
        assert item["source"] == "import"
        assert item["headers"]["Ledger-Import-Source"] == str(source)

    records = _ndjson(_ok(_connledger(env, tmp_path, "replay")).stdout)
    assert [(r["position"], r["id"], r["sessionId"], r["sequence"], r["count"]) for r in records] == [
        (1, "e1", "S1", 1, 1),
        (2, "e2", "S1", 2, 2),
        (3, VONAGE_ID, "S2", 1, 1),
        (4, "e3", "S1", 3, 1),
        (5, "e4", "S3", 1, 1),
        (6, "e5", "S3", 2, 0),
    ]
    assert records[2]["connection"] == {
        "connectionId": "v1",
        "creationTime": 1_732_700_000_400,
        "data": "name=Vo",
    }
    assert records[3]["reason"] == "clientDisconnected"
    assert all(r["defaultPrevented"] is False and r["preventedBy"] is None for r in records)

    count = _ok(_connledger(env, tmp_path, "count", "S1"))
    assert orjson.loads(count.stdout) == {"sessionId": "S1", "count": 1, "position": 6}
    for args in (["count", "S 1"], ["replay", "--session", "S/1"]):
        refused = _connledger(env, tmp_path, *args)
        assert refused.returncode == 2
        assert "a sessionId is 1 to 256 characters" in refused.stderr.decode()
    _check_time_travel_and_usage(env, tmp_path)
    active = _ndjson(_ok(_connledger(env, tmp_path, "sessions")).stdout)
    assert active == SESSIONS_ALL[:2]
    assert _ndjson(_ok(_connledger(env, tmp_path, "sessions", "--all")).stdout) == SESSIONS_ALL

    rebuilt = _ok(_connledger(env, tmp_path, "rebuild"))
    assert "6" in rebuilt.stderr.decode()
    assert _ndjson(_ok(_connledger(env, tmp_path, "sessions", "--all")).stdout) == SESSIONS_ALL

    # `import -` reads stdin: a new event, a duplicate of the file's, and a bad line.
    e6 = _line(_native("e6", "connectionCreated", "S3", "y"))
    piped = _ok(_connledger(env, tmp_path, "import", "-", stdin=b"\n".join([e6, E2, b"nope"]) + b"\n"))
    assert orjson.loads(piped.stdout) == {"appended": 1, "duplicates": 1, "rejected": 1, "ignored": 0}
    assert "line 3: malformed_json" in piped.stderr.decode()
    after = max(r["id"] for r in rejected)
    newer = _ndjson(_ok(_connledger(env, tmp_path, "rejected", "--after", str(after))).stdout)
    assert [(r["code"], base64.b64decode(r["raw"]), r["headers"]) for r in newer] == [
        ("malformed_json", b"nope", {"Ledger-Import-Source": "<stdin>", "Ledger-Import-Line": "3"})
    ]
    assert _ndjson(_ok(_connledger(env, tmp_path, "sessions", "--all")).stdout) == [
        *SESSIONS_ALL[:2],
        {"sessionId": "S3", "count": 1},
    ]


def _check_time_travel_and_usage(env: dict[str, str], tmp_path: Path) -> None:
    """count and connections --at/--as-of, usage as NDJSON and CSV, and their refusals, on the
    imported ledger (positions as in the replay above)."""
    at_two = orjson.loads(_ok(_connledger(env, tmp_path, "count", "S1", "--at", "2")).stdout)
    assert at_two == {"sessionId": "S1", "count": 2, "position": 2}
    before = orjson.loads(_ok(_connledger(env, tmp_path, "count", "S1", "--as-of", "0")).stdout)
    assert before == {"sessionId": "S1", "count": 0, "position": 0}
    at_four = orjson.loads(_ok(_connledger(env, tmp_path, "connections", "S1", "--at", "4", "--json")).stdout)
    assert [c["connectionId"] for c in at_four["connections"]] == ["b"]
    usage = _ndjson(_ok(_connledger(env, tmp_path, "usage")).stdout)
    assert [(u["sessionId"], u["connections"], u["open"], u["byReason"]) for u in usage] == [
        ("S1", 2, 1, {"clientDisconnected": 1}),
        ("S2", 1, 1, {}),
        ("S3", 1, 0, {"networkDisconnected": 1}),
    ]
    table = _ok(_connledger(env, tmp_path, "usage", "--format", "csv")).stdout.decode().splitlines()
    assert table[0].startswith("sessionId,from,to,peakCount,peakTimestamp,connectionMilliseconds")
    assert [line.split(",")[0] for line in table[1:]] == ["S1", "S2", "S3"]
    one = _ndjson(
        _ok(_connledger(env, tmp_path, "usage", "--session", "S3", "--from", "0", "--to", "1")).stdout
    )
    assert (one[0]["from"], one[0]["to"], one[0]["connections"]) == (0, 1, 0)
    for args, named in (
        (["count", "S1", "--at", "7"], "--at"),
        (["count", "S1", "--at", "1", "--as-of", "5"], "--as-of"),
        (["connections", "S1", "--at", "-1"], "--at"),
        (["usage", "--from", "10", "--to", "5"], "--from"),
        (["usage", "--to", "soon"], "--to"),
        (["usage", "--format", "xml"], "--format"),
    ):
        refused = _connledger(env, tmp_path, *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert named in refused.stderr.decode(), (args, refused.stderr)


def test_a_missing_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    env = _environment(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    missing = tmp_path / "no-such-file.ndjson"
    result = _connledger(env, tmp_path, "import", str(missing))
    assert result.returncode != 0
    message = result.stderr.decode()
    assert str(missing) in message
    assert "No such file" in message
    assert result.stdout == b""


def test_a_command_on_a_database_at_the_latest_schema_does_not_load_alembic(tmp_path: Path) -> None:
    """Alembic is loaded to migrate a new database, and not by the commands after it: its
    import alone is most of a second of every `count` or `replay`."""
    env = _environment(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", tmp_path)

    def modules_loaded(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "service", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stderr.decode()

    assert re.search(r"\balembic\b", modules_loaded("count", "S1"))  # a new database: migrated
    assert not re.search(r"\balembic\b", modules_loaded("count", "S1"))


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x",
        "not a database url",
        "postgresql+asyncpg//ledger:hunter2@db/ledger",
        "postgresql://ledger:hunter2@db:port/ledger",
    ],
)
def test_a_bad_database_url_is_an_error_that_names_the_setting(url: str, tmp_path: Path) -> None:
    result = _connledger(_environment(url, tmp_path), tmp_path, "count", "S1")
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "LEDGER_DATABASE_URL" in stderr
    assert "Traceback" not in stderr
    assert "hunter2" not in stderr  # the password, masked
    assert result.stdout == b""


# Regression: `connledger import` once prepared batch N+1 (running its hooks after a store.known()
# read) while batch N was still being committed, so the hooks ran again for an event that
# duplicated one of the batch before. CONTRACT 2 deduplicates (step 2) before the hooks (step 3).
def test_import_does_not_run_the_hooks_again_for_a_duplicate_of_the_line_before(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "hooked.txt"
    env = _environment(database_url, tmp_path)
    env["LEDGER_HOOKS"] = "tests.e2e.cli_hooks:record"
    env["CONNLEDGER_TEST_HOOK_LOG"] = str(log)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    source = tmp_path / "events.ndjson"
    source.write_bytes(b"".join(line + b"\n" for line in (E1, E2, E2)))

    imported = _ok(_connledger(env, tmp_path, "import", "--batch-size", "1", str(source)))
    assert orjson.loads(imported.stdout) == {"appended": 2, "duplicates": 1, "rejected": 0, "ignored": 0}
    # Line 3 is the event of line 2 again: a duplicate, for which the hooks do not run.
    assert log.read_text().split() == ["e1", "e2"]


# Regression: `connledger import` once prepared a batch a slice of lines at a time, each slice with
# its own pipeline.prepare(), whose within-batch dedupe and store.known() read could not see an
# earlier slice of the same, not yet committed, batch: the hooks ran again for a duplicate more
# than a slice (500 lines) after its original.
def test_import_does_not_run_the_hooks_again_for_a_duplicate_later_in_the_same_batch(
    tmp_path: Path,
) -> None:
    log = tmp_path / "hooked.txt"
    env = _environment(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    env["LEDGER_HOOKS"] = "tests.e2e.cli_hooks:record"
    env["CONNLEDGER_TEST_HOOK_LOG"] = str(log)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    lines = [_line(_native(f"e{i}", "connectionCreated", "S1", f"c{i}")) for i in range(1_200)]
    lines.append(lines[0])  # the first event again, as the last line: a duplicate
    source = tmp_path / "events.ndjson"
    source.write_bytes(b"".join(line + b"\n" for line in lines))

    # One batch holds every line.
    imported = _ok(_connledger(env, tmp_path, "import", "--batch-size", "5000", str(source)))
    assert orjson.loads(imported.stdout) == {"appended": 1_200, "duplicates": 1, "rejected": 0, "ignored": 0}
    hooked = log.read_text().split()
    assert len(set(hooked)) == 1_200
    assert hooked.count("e0") == 1


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"database": "no_such_ledger_database"}, "does not exist"),
        ({"username": "no_such_role"}, "no_such_role"),
    ],
)
def test_a_postgresql_url_the_server_refuses_is_a_clear_error(
    postgres_url: str, tmp_path: Path, change: dict[str, str], said: str
) -> None:
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg", **change)
    env = _environment(url.render_as_string(hide_password=False), tmp_path)
    result = _connledger(env, tmp_path, "count", "x")
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "LEDGER_DATABASE_URL: the database refused the connection" in stderr
    assert said in stderr
    assert "Traceback" not in stderr
