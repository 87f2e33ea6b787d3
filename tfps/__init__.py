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

__version__ = "0.1.0"

__all__ = [
    "Cluster",
    "TaskId",
    "errors",
    "in_process_cluster",
    "make_coordinator",
    "make_partitioner",
    "make_strategy",
    "variable_table",
]
