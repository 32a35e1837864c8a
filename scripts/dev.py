#!/usr/bin/env python3
"""Set up the project's virtual environment from the lock file, then run a command in it.

    python3 scripts/dev.py serve     # run the service on its embedded default
    python3 scripts/dev.py test      # run the whole test suite
    python3 scripts/dev.py lint      # ruff (lint and format) and mypy --strict, as CI runs them
    python3 scripts/dev.py <cmd> ... # any other connledger command, e.g. import FILE

Only the standard library is used here, because this is what runs on a fresh clone where
nothing but python3 is installed. The environment is rebuilt when requirements.lock changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".lock-sha256"


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def ensure_environment() -> None:
    wanted = hashlib.sha256(LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted and _bin("connledger").exists():
        return
    if not _bin("python").exists():
        print(f"creating {VENV.relative_to(ROOT)} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(_bin("python")), "-m", "pip", "--disable-pip-version-check", "-q"]
    print("installing the locked dependencies ...", file=sys.stderr)
    subprocess.run([*pip, "install", "--require-hashes", "-r", str(LOCK)], check=True, cwd=ROOT)
    subprocess.run([*pip, "install", "--no-deps", "-e", "."], check=True, cwd=ROOT)
    STAMP.write_text(wanted + "\n")


# What ruff lints and formats: the code, its tests, benchmarks, migrations and these scripts.
LINTED = ["service", "tests", "bench", "migrations", "scripts", "setup.py"]


def _lint() -> int:
    """ruff check, ruff format --check and mypy (strict, on service/: pyproject.toml); the
    first failure's exit status, after running all three."""
    steps = [
        [str(_bin("ruff")), "check", *LINTED],
        [str(_bin("ruff")), "format", "--check", *LINTED],
        [str(_bin("mypy"))],
    ]
    failed = 0
    for step in steps:
        code = subprocess.run(step, cwd=ROOT).returncode
        failed = failed or code
    return failed


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by an older python3
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "lint":
        return _lint()
    if command == "test":
        args = [str(_bin("python")), "-m", "pytest", *rest]
    else:
        args = [str(_bin("connledger")), command, *rest]
    os.chdir(ROOT)
    os.execv(args[0], args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
