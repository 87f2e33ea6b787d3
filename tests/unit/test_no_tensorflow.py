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
PURE = ["tfps", "tfps.cluster", "tfps.slurm", "tfps.specio", "tfps.validate", "tfps.policy",
        "tfps.ports", "tfps._cli", "tfps.server", "tfps.train.options", "tfps.launch.cli",
        "tfps.launch.config", "tfps.launch.emit", "tfps.launch.tfjob", "tfps.launch.sbatch",
        "tfps.launch.doctor", "tfps.launch.plan", "tfps.launch.supervisor",
        "tfps.launch.failures", "tfps.launch.namespaces", "tfps.launch.scripts",
        "tfps.launch.entry", "tfps.launch.peers", "tfps.launch.resources", "tfps.strategy",
        "tfps.layers", "tfps.layers.config", "tfps.export", "tfps.export.paths",
        "tfps.export.cli"]

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
