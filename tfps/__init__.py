"""tfps: parameter-server training on TensorFlow's ParameterServerStrategy, made practical.

Importing tfps sets ``TF_USE_LEGACY_KERAS=1`` (so `tf.keras` is tf_keras, the Keras whose `fit`
runs under ParameterServerStrategy) and ``GRPC_FAIL_FAST=use_caller`` unless already set.
Import tfps before TensorFlow, or launch with ``tfps-launch``, which sets both for every task.

`import tfps` itself does not import TensorFlow (the launcher and the task servers start
without it): the names that need it load on first use.

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
from tfps.train import preemption as _preemption  # noqa: E402

# In a chief tfps-launch started, a preemption notice (SIGUSR1) is kept from now on, not
# fatal: the Trainer checkpoints at its first closure boundary and exits to be requeued.
_preemption.install_for_launched_chief()

__version__ = "0.2.0"

# name -> module that defines it, loaded on first attribute access (PEP 562).
_LAZY = {
    "Trainer": "tfps.train.trainer",
    "export_saved_model": "tfps.export.saved_model",
    "TrainerOptions": "tfps.train.options",
    "TrainResult": "tfps.train.options",
    "in_process_cluster": "tfps.strategy",
    "make_coordinator": "tfps.strategy",
    "make_partitioner": "tfps.strategy",
    "make_strategy": "tfps.strategy",
    "variable_table": "tfps.strategy",
}
# Submodules reachable as attributes (`tfps.schedules.get`, `tfps.keras.fit`). `keras` is left
# out of `__all__`: importing it raises KerasBindingError where `tf.keras` is Keras 3.
_LAZY_SUBMODULES = ("data", "export", "keras", "layers", "policy", "schedules")

__all__ = ["Cluster", "TaskId", "data", "errors", "export", "layers", "schedules", *_LAZY]


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"tfps.{name}")
    raise AttributeError(f"module 'tfps' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_SUBMODULES))
