"""Build a ParameterServerStrategy and its ClusterCoordinator from a `tfps.Cluster`.

The chief (or any coordinator process) calls `make_strategy`; the strategy connects to every ps
and worker itself (with retries), so no `experimental_connect_to_cluster` call is needed.

Large variables are split over the ps tasks by a `MinSizePartitioner`: shards of at least
256 KiB, at most one per ps task. Small variables stay whole (sharding a bias would only add RPCs).

Example, on an in-process cluster (what notebooks and tests use):

>>> import tfps, tensorflow as tf
>>> strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=2))
>>> with strategy.scope():
...     table = tf.Variable(tf.zeros([100_000, 8]))   # 3.2 MB: two shards, one per ps
>>> [v.device.split("/")[1] for v in table.variables]
['job:ps', 'job:ps']
>>> coordinator = tfps.make_coordinator(strategy)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable

from tfps import _env, _tf, policy, validate
from tfps.cluster import Cluster
from tfps.errors import ConfigError
from tfps.policy import DEFAULT_MIN_SHARD_BYTES

__all__ = [
    "DEFAULT_MIN_SHARD_BYTES",
    "cluster_resolver",
    "in_process_cluster",
    "make_coordinator",
    "make_partitioner",
    "make_strategy",
    "variable_table",
]

log = logging.getLogger(__name__)

# More ps tasks than any cluster has: a bound, so that a typo cannot ask TF for 10**9 shards.
_MAX_PS = 100_000

# Servers of in-process clusters: TF servers cannot be stopped, so they live as long as the
# process; keeping references stops them being garbage-collected mid-training.
_IN_PROCESS_SERVERS: list = []


def make_partitioner(num_ps: int, min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES,
                     max_shards: int | None = None):
    """A `MinSizePartitioner`: shards >= `min_shard_bytes`, at most `max_shards` (or num_ps)."""
    tf = _tf.require()

    validate.integer("num_ps", num_ps, low=1, high=_MAX_PS)
    validate.integer("min_shard_bytes", min_shard_bytes, low=1, high=1 << 50)
    validate.integer("max_shards", max_shards, low=1, high=_MAX_PS, allow_none=True)
    return tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=max_shards or num_ps)


def cluster_resolver(cluster: Cluster | None = None):
    """A resolver for the coordinator: the training cluster (never the evaluator), task chief:0.

    Args:
      cluster: a `tfps.Cluster`; None reads it from the environment (`Cluster.from_env`).
    """
    tf = _tf.require()

    cluster = Cluster.from_env() if cluster is None else cluster
    if not isinstance(cluster, Cluster):
        raise ConfigError(f"Argument `cluster` must be a tfps.Cluster or None. "
                          f"Received: cluster={cluster!r:.80}")
    spec = tf.train.ClusterSpec(cluster.as_dict(training_only=True))
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type="chief", task_id=0, rpc_layer="grpc")


def make_strategy(cluster=None, *, partitioner="auto",
                  min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES,
                  max_shards: int | None = None):
    """Builds a `tf.distribute.experimental.ParameterServerStrategy`.

    Args:
      cluster: a `tfps.Cluster`, a TF `ClusterResolver` (e.g. from `in_process_cluster`), or
        None to read the cluster from the environment (TF_CONFIG or Slurm).
      partitioner: ``"auto"`` (a `MinSizePartitioner`, see `make_partitioner`), None for no
        sharding, or any `tf.distribute.experimental.partitioners.Partitioner`.
      min_shard_bytes: smallest shard for ``"auto"``.
      max_shards: most shards per variable for ``"auto"``; default the number of ps tasks.

    Returns:
      The strategy, already connected to the cluster.
    """
    tf = _tf.require()

    os.environ.setdefault("GRPC_FAIL_FAST", _env.TASK_ENV["GRPC_FAIL_FAST"])
    if isinstance(cluster, tf.distribute.cluster_resolver.ClusterResolver):
        resolver = cluster
    else:
        resolver = cluster_resolver(cluster)
    num_ps = len(resolver.cluster_spec().as_dict().get("ps", ()))
    if isinstance(partitioner, str):
        if partitioner != "auto":
            raise ConfigError(f"Argument `partitioner` must be 'auto', None or a Partitioner. "
                              f"Received: partitioner={partitioner!r}")
        partitioner = make_partitioner(max(num_ps, 1), min_shard_bytes, max_shards)
    log.info("tfps: connecting to cluster %s", resolver.cluster_spec().as_dict())
    if not _IN_PROCESS_SERVERS:  # the chief's settings reach every task's eager context
        _tf.set_thread_spinning(policy.thread_spinning(policy.tasks_on_host(os.environ),
                                                       os.cpu_count() or 1))
    return tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner)


def make_coordinator(strategy):
    """The `ClusterCoordinator` of `strategy` (one per strategy: TF's constructor returns the
    strategy's existing coordinator when there is one, cluster_coordinator.py `__new__`)."""
    tf = _tf.require()

    return tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)


def _worker_inter_op_threads(num_workers: int) -> int:
    """Inter-op pool size for an in-process worker server.

    Two hangs come from a pool that is too small (docs/tensorflow-notes.md, "A small inter-op
    pool hangs in-process clusters", has what was seen):
    - With one thread per core, the workers and the coordinator starve each other and training
      hangs (the official PSS tutorial sets ``num_workers + 1`` for this).
    - A dataset whose iterator runs a TF function when destroyed (``from_generator``'s
      finalize function; ``tfds.testing.mock_data`` builds one) deadlocks the pool when the
      chief drops the iterator: the worker's ``RemoteMgr::DeleteTensorHandle`` destroys the
      iterator while holding its mutex, from an inter-op thread, and the finalize function
      waits for a free inter-op thread; the other deletes the chief sent at the same time each
      take a thread and block on that mutex. More threads make it need more simultaneous
      deletes; idle threads cost nothing.
    """
    return max(multiprocessing.cpu_count(), 4 * (num_workers + 1))


def in_process_cluster(num_ps: int = 2, num_workers: int = 2):
    """Starts ps and worker servers inside this process; returns their cluster resolver.

    For notebooks and tests. The servers live until the process exits (TF cannot stop them).
    Each worker gets at least ``4 * (num_workers + 1)`` inter-op threads (TF's default is one
    per core); see `_worker_inter_op_threads` for the two hangs a small pool causes.

    >>> resolver = in_process_cluster(num_ps=1, num_workers=1)
    >>> sorted(resolver.cluster_spec().as_dict())
    ['ps', 'worker']
    """
    tf = _tf.require()

    cluster = Cluster.local(num_ps=num_ps, num_workers=num_workers, chief=False)
    spec = tf.train.ClusterSpec(cluster.as_dict(training_only=True))
    # Every server of this process shares its cores with the others and the chief.
    spinning = policy.thread_spinning(num_ps + num_workers + 1, os.cpu_count() or 1)
    _tf.set_thread_spinning(spinning)
    worker_config = tf.compat.v1.ConfigProto(
        inter_op_parallelism_threads=_worker_inter_op_threads(num_workers))
    ps_config = tf.compat.v1.ConfigProto()
    for config in (worker_config, ps_config):
        config.experimental.disable_thread_spinning = not spinning
    for role, count, config in (("worker", num_workers, worker_config),
                                ("ps", num_ps, ps_config)):
        for i in range(count):
            _IN_PROCESS_SERVERS.append(tf.distribute.Server(
                spec, job_name=role, task_index=i, config=config, protocol="grpc", start=True))
    return tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc")


def shards(variable) -> list:
    """A ShardedVariable's shards (gradients must be taken per shard), or [variable]."""
    return list(getattr(variable, "variables", None) or [variable])


def is_keras3(obj) -> bool:
    """True for a Keras 3 object (``import keras``; a subclass of one included), not a
    tf_keras or TensorFlow one."""
    return any(c.__module__.startswith("keras.") for c in type(obj).__mro__)


def tf_variable(variable):
    """The TF variable behind `variable`: Keras 3 wraps one (a `tf.Variable` or a
    `ShardedVariable`) in a ``keras.Variable``; anything else is returned as is."""
    return variable.value if is_keras3(variable) and hasattr(variable, "value") else variable


def _grouped(variables: Iterable) -> list[tuple[str, list]]:
    """(name, shards) per variable. tf_keras lists a ShardedVariable's shards one by one
    (``emb/part_0:0``, ``emb/part_1:0``); consecutive parts are put back together."""
    groups: list[tuple[str, list]] = []
    for var in variables:
        parts = shards(var)
        base, sep, _ = parts[0].name.rpartition("/part_")
        if len(parts) == 1 and sep and groups and groups[-1][0] == base:
            groups[-1][1].extend(parts)
        else:
            groups.append((base if sep else var.name, parts))
    return groups


def variable_table(variables: Iterable) -> str:
    """A table of where every variable (or shard of a `ShardedVariable`) lives.

    >>> print(variable_table([tf.Variable(1.0, name="w")]))  # doctest: +SKIP
    variable  shard  shape  bytes  device
    w:0       -      ()     4      /job:localhost/replica:0/task:0/device:CPU:0
    """
    rows = [("variable", "shard", "shape", "bytes", "device")]
    total = 0
    # PSS names a ShardedVariable itself "ShardedVariable"; its shards "<name>/part_<i>".
    for name, parts in _grouped(variables):
        for i, part in enumerate(parts):
            size = part.shape.num_elements() * part.dtype.size
            total += size
            rows.append((name if i == 0 else "", f"{i}/{len(parts)}" if len(parts) > 1
                         else "-", str(part.shape.as_list()), f"{size:,}", part.device))
    rows.append(("total", "", "", f"{total:,}", ""))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
                     for r in rows)
