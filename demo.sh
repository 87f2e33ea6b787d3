#!/usr/bin/env bash
# Runs the main job: a real multi-process parameter-server training on this machine
# (chief + 2 ps + 2 workers) of the seed example, on its embedded dataset. No network needed
# beyond the first install. Extra arguments go to tfps-launch before the script's flags.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/tfps-launch --num-ps 2 --num-workers 2 "$@" examples/linear_regression.py
