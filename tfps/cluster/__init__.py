"""The cluster model: who runs where, its addresses, and where it is read from. Pure Python.

* `model`: `Cluster` and `TaskId`, the ``TF_CONFIG`` each task gets, the cluster an engine
  describes (`Cluster.from_env`);
* `address`: ``host:port`` (IPv6 in brackets): validated, split, loopback or not;
* `specio`: the bounded reader of spec files and ``TF_CONFIG``;
* `slurm`: a Slurm job step as a cluster;
* `ports`: free ports on this host, and whether a task's port is taken.

Nothing here imports TensorFlow: the launcher and the task servers read clusters without it.

>>> from tfps.cluster import Cluster, split_address
>>> cluster = Cluster.from_dict({"chief": ["h0:2222"], "ps": ["h1:2222"], "worker": ["h2:2222"]})
>>> split_address(cluster.address("ps:0"))
('h1', 2222)
"""

from tfps.cluster.address import is_loopback_host, split_address
from tfps.cluster.model import (
    ALL_ROLES,
    DATA_ROLES,
    DEFAULT_NUM_PS,
    DEFAULT_NUM_WORKERS,
    MAX_LOCAL_TASKS,
    ROLES,
    TRAINING_ROLES,
    Cluster,
    TaskId,
    task_from_env,
    tf_config_task,
)
from tfps.cluster.ports import free_ports, port_in_use

__all__ = ["ALL_ROLES", "DATA_ROLES", "DEFAULT_NUM_PS", "DEFAULT_NUM_WORKERS",
           "MAX_LOCAL_TASKS", "ROLES", "TRAINING_ROLES", "Cluster", "TaskId", "free_ports",
           "is_loopback_host", "port_in_use", "split_address", "task_from_env", "tf_config_task"]
