"""Packaging: version, the tf-keras/TensorFlow version check, the TF range tfps declares."""

import configparser
import importlib.metadata
import os

import pytest
from conftest import REPO

import tfps
from tfps import _env


def test_version():
    assert tfps.__version__ == importlib.metadata.version("tfps")


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


def test_tensorflow_and_tf_keras_are_bounded_from_above():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    requires = [line.strip() for line in config["options"]["install_requires"].splitlines()]
    for name in ("tensorflow", "tf-keras"):
        [spec] = [r for r in requires if r.split(">")[0].split("<")[0].strip() == name]
        assert "<" in spec and ">=" in spec, spec

