"""`tfps._tf.require`: every TF internal tfps relies on is present in the installed TF, and a
missing one fails in one line naming the TF version and what is missing."""

from __future__ import annotations

import pytest

from tfps import _tf
from tfps.errors import TensorFlowCompatibilityError


def test_every_internal_is_present_in_this_tensorflow():
    missing = [what for what, _, present in _tf._requirements() if not present()]
    assert missing == []
    assert _tf.require().__name__ == "tensorflow"


def test_a_missing_internal_fails_in_one_line(monkeypatch):
    real = _tf._requirements
    monkeypatch.setattr(_tf, "_checked", False)
    monkeypatch.setattr(_tf, "_requirements", lambda: real() + (
        ("Future._renamed", "tensorflow/python/distribute/future.py", lambda: False),))
    with pytest.raises(TensorFlowCompatibilityError) as info:
        _tf.require()
    message = str(info.value)
    assert "\n" not in message
    assert "tfps cannot run on tensorflow 2." in message
    assert "it needs Future._renamed from tensorflow/python/distribute/future.py" in message
    assert isinstance(info.value, ImportError)
