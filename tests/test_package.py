"""Packaging: version, the tf-keras/TensorFlow version check, the environment tfps sets."""

import importlib.metadata
import subprocess
import sys

import pytest

import tfps
from tfps import _env
from conftest import REPO


def test_version():
    assert tfps.__version__ == importlib.metadata.version("tfps")


def test_import_sets_the_task_environment():
    out = subprocess.run(
        [sys.executable, "-c", "import os, tfps; print(os.environ['TF_USE_LEGACY_KERAS'], "
         "os.environ['GRPC_FAIL_FAST'])"], cwd=REPO, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "use_caller"]


@pytest.mark.parametrize("tf_version, keras_version, ok", [
    ("2.21.0", "2.21.0", True), ("2.21.1", "2.21.0", True), ("2.21.0", "2.20.1", False),
    ("2.16.2", "2.17.0", False)])
def test_tf_keras_must_match_tensorflow_minor(monkeypatch, tf_version, keras_version, ok):
    versions = {"tensorflow": tf_version, "tf-keras": keras_version}
    monkeypatch.setattr(importlib.metadata, "version", versions.__getitem__)
    if ok:
        _env.check_versions()
    else:
        with pytest.raises(ImportError, match=f"tf-keras {keras_version} does not match "
                                              f"tensorflow {tf_version}"):
            _env.check_versions()
