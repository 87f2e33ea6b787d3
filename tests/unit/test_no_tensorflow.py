"""The unit lane runs without TensorFlow: everything it tests is pure Python.

``./test.sh unit`` puts ``tests/unit/no_tensorflow`` first on ``PYTHONPATH``, where stand-ins
for tensorflow, tf_keras and keras raise on import, and sets ``TFPS_UNIT_LANE=1``.
"""

from __future__ import annotations

import importlib
import os

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

in_lane = pytest.mark.skipif(os.environ.get("TFPS_UNIT_LANE") != "1",
                             reason="only inside the unit lane (./test.sh unit)")


@in_lane
@pytest.mark.parametrize("name", ["tensorflow", "tf_keras", "keras"])
def test_tensorflow_cannot_be_imported_here(name):
    with pytest.raises(ImportError, match="cannot be imported in the unit lane"):
        importlib.import_module(name)


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_without_tensorflow(module):
    importlib.import_module(module)
