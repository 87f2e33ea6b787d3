#!/usr/bin/env bash
# Runs the whole test suite: creates .venv if needed, installs tfps with its test extra,
# then pytest. Extra arguments go to pytest (e.g. ./test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
if [ "$#" -eq 0 ]; then set -- tests; fi
exec .venv/bin/python -m pytest -q "$@"
