#!/usr/bin/env bash
# Runs the main job: a real multi-process parameter-server training on this machine
# (chief + 2 ps + 2 workers) of the seed example, on its embedded dataset. No network needed
# beyond the first install. Extra arguments go to tfps-launch before the script's flags.
set -euo pipefail
cd "$(dirname "$0")"
# pip is upgraded once, when the venv is made: on later runs it would only ask the index
# again (and repeat the index's warnings) for nothing.
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/python -m pip install --quiet --upgrade pip; }
# setuptools warns at every editable install that a folder named like the package in
# the working directory could shadow it (its meta-path finder): informational, and
# about setuptools, not tfps. Only that module's warnings are silenced.
PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:::setuptools.command.editable_wheel" \
  .venv/bin/python -m pip install --quiet -e .
exec .venv/bin/tfps-launch --num-ps 2 --num-workers 2 "$@" examples/linear_regression.py
