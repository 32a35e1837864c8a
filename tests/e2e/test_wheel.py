"""The project as users install it: the wheel and its locked dependencies in a new virtual
environment outside the checkout, every command run from an empty folder elsewhere, as a
platform team's image does it (the steps of deploy/Dockerfile after its base image)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dockerfile import copied_sources, read_dockerfile
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


class Installed:
    """A virtual environment holding the project's wheel and nothing of the checkout."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.python = prefix / "bin" / "python"
        self.connledger = prefix / "bin" / "connledger"

    def env(self, **settings: str) -> dict[str, str]:
        # Nothing of the test run leaks in: no PYTHONPATH, no LEDGER_* of the caller.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "PYTHON"))}
        return {**base, "LEDGER_HOOKS": "", **settings}

    def run(self, cwd: Path, *args: str, stdin: bytes | None = None, **settings: str) -> str:
        done = subprocess.run(
            [str(self.connledger), *args],
            cwd=cwd,
            env=self.env(**settings),
            input=stdin,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, (
            f"connledger {' '.join(args)} exited {done.returncode}:\n"
            f"{done.stdout.decode()}\n{done.stderr.decode()}"
        )
        return done.stdout.decode()


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    """Installed by deploy/install-venv.sh, from a folder holding only what deploy/Dockerfile
    copies into its build stage: what the image gets, it gets from these steps."""
    build = read_dockerfile().stage("build")
    with tempfile.TemporaryDirectory(prefix="ledger-wheel-") as folder:
        top = Path(folder)
        source = top / "src"
        source.mkdir()
        for name in copied_sources(build):
            copy = source / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / name).is_dir():
                shutil.copytree(
                    ROOT / name, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(ROOT / name, copy)
        subprocess.run(
            ["sh", str(source / "deploy" / "install-venv.sh"), str(source), str(top / "venv")],
            check=True,
            cwd=top,
            env={**os.environ, "PYTHON": sys.executable},
        )
        yield Installed(top / "venv")


def test_the_wheel_carries_what_the_service_reads_at_run_time(installed: Installed, tmp_path: Path) -> None:
    probe = (
        "import pathlib, service, service.ledger.database as d, service.http.routes.dashboard as h;"
        "print(service.__file__);"
        "print(sorted(p.name for p in (d.MIGRATIONS_DIR / 'versions').glob('*.py')));"
        "print(sorted(p.name for p in h.STATIC.iterdir()))"
    )
    done = subprocess.run(
        [str(installed.python), "-c", probe],
        cwd=tmp_path,
        env=installed.env(),
        capture_output=True,
        check=True,
        text=True,
    )
    package, versions, static = done.stdout.splitlines()
    assert Path(package).is_relative_to(installed.prefix), "the service is imported from the checkout"
    assert not Path(package).is_relative_to(ROOT)
    shipped = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert versions == repr(shipped)
    assert static == repr(sorted(p.name for p in (ROOT / "service" / "http" / "static").iterdir()))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_installed_commands_run_from_any_folder(
    installed: Installed, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """migrate, import, count and serve, from an empty folder, on each database."""
    settings: dict[str, str] = {}
    if backend == "postgresql":
        settings["LEDGER_DATABASE_URL"] = request.getfixturevalue("fresh_postgres")
    work = tmp_path / "elsewhere"
    work.mkdir()

    installed.run(work, "migrate", **settings)
    events = [
        {
            "id": f"e{n}",
            "type": "connectionCreated",
            "sessionId": "wheel-session",
            "timestamp": 1_732_700_000_000 + n,
            "connection": {"connectionId": f"c{n}", "creationTime": 1_732_700_000_000},
        }
        for n in range(3)
    ]
    lines = "\n".join(json.dumps(e) for e in events).encode() + b"\n"
    summary = json.loads(installed.run(work, "import", "-", stdin=lines, **settings))
    assert summary == {"appended": 3, "duplicates": 0, "rejected": 0, "ignored": 0}
    count = json.loads(installed.run(work, "count", "wheel-session", **settings))
    assert count == {"sessionId": "wheel-session", "count": 3, "position": 3}

    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        serve = subprocess.Popen(
            [str(installed.connledger), "serve"],
            cwd=work,
            env=installed.env(LEDGER_HTTP_PORT="0", LEDGER_NATS_PORT=str(free_port()), **settings),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert serve.stdout is not None
        banner: list[str] = []
        while not (banner and banner[-1].startswith("ready")):
            line = serve.stdout.readline().decode()
            if not line:
                serve.wait(10)
                pytest.fail(f"serve exited {serve.returncode}:\n{log.read_text()}")
            banner.append(line)
        http = next(b.split()[1] for b in banner if b.startswith("HTTP"))
        with urllib.request.urlopen(f"{http}/readyz", timeout=10) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"{http}/v1/sessions/wheel-session/count", timeout=10) as answer:
            assert json.loads(answer.read())["count"] == 3
        with urllib.request.urlopen(f"{http}/static/dashboard.js", timeout=10) as answer:
            assert answer.status == 200
    finally:
        serve.terminate()
        code = serve.wait(40)
        assert serve.stdout is not None
        serve.stdout.close()
    assert code == 0, log.read_text()
    if backend == "sqlite":
        assert (work / "var" / "ledger.db").exists(), "the embedded default lives in the working folder"
