"""The repository passes its linter (`ruff`, configured in pyproject.toml): imports in order, no
unused names, no bare excepts, no reach into private members outside the door to TensorFlow."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                             "--output-format", "concise", "."],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_would_catch_a_reach_into_tensorflow(tmp_path):
    # The configuration is live: a private TF member outside tfps/_tf*.py is an error.
    module = tmp_path / "tfps" / "reach.py"
    module.parent.mkdir()
    module.write_text("def f(strategy):\n    return strategy.extended._num_ps\n")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                             "--config", str(REPO / "pyproject.toml"), str(module)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "SLF001" in result.stdout, result.stdout
