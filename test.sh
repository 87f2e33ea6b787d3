#!/usr/bin/env bash
# Runs the test suite: creates .venv if needed, installs tfps with its test extra, then pytest.
#
#   ./test.sh                 every lane: unit (without TensorFlow), then integration + drills
#   ./test.sh unit            the one-minute lane: pure tests, TensorFlow made impossible
#   ./test.sh integration     in-process clusters;   ./test.sh drills: multi-process launches
#   ./test.sh -OPTIONS...     every lane, each with those pytest options (./test.sh -m "not slow")
#   ./test.sh PATHS...        anything else goes to pytest as is (./test.sh tests/unit/test_cli.py)
set -euo pipefail
cd "$(dirname "$0")"
# pip is upgraded once, when the venv is made: on later runs it would only ask the index
# again (and repeat the index's warnings) for nothing.
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/python -m pip install --quiet --upgrade pip; }
# setuptools warns at every editable install that a folder named like the package in
# the working directory could shadow it (its meta-path finder): informational, and
# about setuptools, not tfps. Only that module's warnings are silenced.
PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:::setuptools.command.editable_wheel" \
  .venv/bin/python -m pip install --quiet -e '.[test]'

unit() {  # TensorFlow cannot be imported there (tests/unit_lane.py, a plugin of conftest)
  .venv/bin/python -m pytest -q tests/unit "$@"
}
case "${1:-all}" in
  all) shift $(( $# > 0 ? 1 : 0 )) ;;
  -*) ;;  # options: for every lane
  unit) shift; unit "$@"; exit ;;
  integration|drills) lane=$1; shift; exec .venv/bin/python -m pytest -q "tests/$lane" "$@" ;;
  *) exec .venv/bin/python -m pytest -q "$@" ;;
esac
# The unit lane in a session of its own (its files share names with the other lanes'), then
# integration and drills together.
unit "$@"
exec .venv/bin/python -m pytest -q tests/integration tests/drills "$@"
