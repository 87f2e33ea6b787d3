"""The unit lane runs without TensorFlow: everything it tests is pure Python.

tests/unit/conftest.py makes TensorFlow impossible to import while a unit test module loads
and while a unit test runs, in this process and in the processes it starts; so a plain
``pytest tests/unit`` enforces it, as ``./test.sh unit`` does.
"""

from __future__ import annotations

import importlib

import pytest

# Modules the launcher, the task server's argument handling, specs, plans and policies live
# in: none of them may need TensorFlow to import.
PURE = ["tfps", "tfps.cluster", "tfps.cluster.model", "tfps.cluster.address",
        "tfps.cluster.slurm", "tfps.cluster.specio", "tfps.cluster.ports", "tfps.validate",
        "tfps.policy", "tfps._units", "tfps._cli", "tfps.server", "tfps.train.options",
        "tfps.emit", "tfps.emit.cli", "tfps.emit.job", "tfps.emit.kube", "tfps.emit.tfjob",
        "tfps.emit.slurm", "tfps.emit.resources", "tfps.launch.cli", "tfps.launch.config",
        "tfps.launch.doctor", "tfps.launch.entry", "tfps.launch.run.plan",
        "tfps.launch.run.supervisor", "tfps.launch.run.failures", "tfps.launch.run.namespaces",
        "tfps.launch.run.scripts", "tfps.launch.run.peers", "tfps.launch.run.logs",
        "tfps.strategy", "tfps.layers", "tfps.layers.config", "tfps.export", "tfps.export.paths",
        "tfps.export.cli", "tfps.checkpoints", "tfps.checkpoints.layout"]

@pytest.mark.parametrize("name", ["tensorflow", "tf_keras", "keras", "tensorflow.python"])
def test_tensorflow_cannot_be_imported_here(name):
    with pytest.raises(ImportError, match="cannot be imported in the unit lane"):
        importlib.import_module(name)


def test_nor_in_a_process_a_unit_test_starts():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "cannot be imported in the unit lane" in out.stderr


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_without_tensorflow(module):
    importlib.import_module(module)
