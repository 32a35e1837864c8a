#!/bin/sh
# Installs Connection Ledger as users run it: the project's wheel and its locked run-time
# dependencies (requirements-runtime.lock, hashes checked) in a new virtual environment.
#
#     deploy/install-venv.sh SOURCE_FOLDER VENV_FOLDER
#
# The container image runs this in its build stage (deploy/Dockerfile), and the test suite
# runs it too (tests/e2e/test_wheel.py), so that the image's steps are tested where no
# container runtime exists. PYTHON names the interpreter (default: python3).
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 SOURCE_FOLDER VENV_FOLDER" >&2
    exit 2
fi
source_folder=$1
venv_folder=$2
python=${PYTHON:-python3}

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

"$python" -m pip --disable-pip-version-check -q wheel --no-deps -w "$wheels" "$source_folder"
"$python" -m venv "$venv_folder"
"$venv_folder/bin/python" -m pip --disable-pip-version-check -q install \
    --require-hashes -r "$source_folder/requirements-runtime.lock"
"$venv_folder/bin/python" -m pip --disable-pip-version-check -q install --no-deps "$wheels"/connection_ledger-*.whl
