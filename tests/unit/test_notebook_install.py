"""The notebook's install cell (examples/colab_demo.ipynb, issue 16) installs tfps from what a
user has: a wheel uploaded next to the notebook, or the checkout the notebook sits in; and
says what to upload when there is neither. Run here with `import tfps` made to fail once and
pip replaced by a recorder (nothing is installed)."""

from __future__ import annotations

import builtins
import json
import os
import subprocess

import pytest
from conftest import REPO

NOTEBOOK = os.path.join(REPO, "examples", "colab_demo.ipynb")


def _install_cell() -> str:
    with open(NOTEBOOK) as f:
        cells = json.load(f)["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def _run_cell(monkeypatch, cwd, source: str | None = None) -> list[list[str]]:
    """Runs the install cell in `cwd` as if tfps were not installed; returns pip's commands."""
    calls: list[list[str]] = []
    real_import = builtins.__import__
    failed = []

    def fake_import(name, *args, **kwargs):
        if name == "tfps" and not failed:
            failed.append(name)
            raise ImportError("No module named 'tfps'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(subprocess, "check_call", lambda argv: calls.append(argv))
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    code = _install_cell()
    if source is not None:
        code = code.replace('TFPS_SOURCE = ""', f"TFPS_SOURCE = {source!r}", 1)
    exec(compile(code, "install-cell", "exec"), {"__name__": "__main__"})
    return calls


def _installed(calls) -> str:
    [argv] = calls
    assert argv[1:5] == ["-m", "pip", "install", "--quiet"], argv
    assert any(a.startswith("tf-keras~=") for a in argv), argv  # TF is in this venv
    return argv[5]


def test_a_wheel_uploaded_next_to_the_notebook_is_installed(monkeypatch, tmp_path):
    (tmp_path / "tfps-0.1.0-py3-none-any.whl").write_bytes(b"old")
    wheel = tmp_path / "tfps-0.2.0-py3-none-any.whl"
    wheel.write_bytes(b"new")
    os.utime(tmp_path / "tfps-0.1.0-py3-none-any.whl", (1, 1))
    assert _installed(_run_cell(monkeypatch, tmp_path)) == str(wheel)


def test_the_checkout_the_notebook_sits_in_is_installed(monkeypatch):
    assert _installed(_run_cell(monkeypatch, os.path.join(REPO, "examples"))) == REPO


def test_a_checkout_copied_below_the_notebook_is_installed(monkeypatch, tmp_path):
    checkout = tmp_path / "tfps"
    (checkout / "tfps").mkdir(parents=True)
    (checkout / "tfps" / "__init__.py").write_text("")
    (checkout / "setup.cfg").write_text("[metadata]\nname = tfps\n")
    assert _installed(_run_cell(monkeypatch, tmp_path)) == str(checkout)


def test_tfps_source_wins(monkeypatch, tmp_path):
    (tmp_path / "tfps-0.2.0-py3-none-any.whl").write_bytes(b"x")
    assert _installed(_run_cell(monkeypatch, tmp_path, "/elsewhere/tfps.whl")) == \
        "/elsewhere/tfps.whl"


def test_with_nothing_to_install_it_says_what_to_upload(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match=r"pip wheel --no-deps -w dist \..*upload"):
        _run_cell(monkeypatch, tmp_path)
