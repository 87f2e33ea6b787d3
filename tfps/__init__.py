"""tfps: parameter-server training on TensorFlow's ParameterServerStrategy, made practical.

Importing tfps sets ``TF_USE_LEGACY_KERAS=1`` (so `tf.keras` is tf_keras, the Keras whose `fit`
runs under ParameterServerStrategy) and ``GRPC_FAIL_FAST=use_caller`` unless already set.
Import tfps before TensorFlow, or launch with ``tfps-launch``, which sets both for every task.

>>> import tfps
>>> cluster = tfps.Cluster.local(num_ps=2, num_workers=2)
>>> sorted(cluster.tf_config("worker", 1)["cluster"])
['chief', 'ps', 'worker']
"""

from tfps import _env

_env.check_versions()
_env.configure()

from tfps import errors  # noqa: E402
from tfps.cluster import Cluster, TaskId  # noqa: E402
from tfps.strategy import (  # noqa: E402
    in_process_cluster, make_coordinator, make_partitioner, make_strategy, variable_table)
from tfps.trainer import Trainer, TrainerOptions, TrainResult  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Cluster",
    "TaskId",
    "Trainer",
    "TrainerOptions",
    "TrainResult",
    "errors",
    "in_process_cluster",
    "make_coordinator",
    "make_partitioner",
    "make_strategy",
    "schedules",
    "variable_table",
]


# `tfps.schedules` and `tfps.keras` import TensorFlow and tf_keras, so they load on first
# attribute access (PEP 562): `import tfps` stays cheap for tfps-launch and the task servers.
# `keras` is left out of `__all__` because importing it raises KerasBindingError where
# `tf.keras` is Keras 3. Inside the package, `import keras` still means Keras 3 (absolute).
_LAZY_SUBMODULES = ("keras", "schedules")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"tfps.{name}")
    raise AttributeError(f"module 'tfps' has no attribute {name!r}")
