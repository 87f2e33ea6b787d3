"""The only door to TensorFlow's and Keras's internals.

tfps relies on a few behaviours that TF and Keras do not export: a read cache for ps
variables, the optimizer's hyperparameter table, the worker count of a
ParameterServerStrategy, and a few more. Each one is used here and nowhere else, with the TF
(or tf_keras) source file it depends on, so a TF upgrade that renames one breaks in one place.

`require()` imports TensorFlow and checks every internal listed in `_REQUIREMENTS` once; every
module of tfps that needs TensorFlow calls it at import. A missing one fails with one line that
names the TensorFlow version and what is missing (`tfps.errors.TensorFlowCompatibilityError`),
instead of an AttributeError deep inside a closure on a worker. The background of each
workaround is in ``docs/tensorflow-notes.md``.

`keras_binding` (used by `import tfps` to warn about Keras 3) only reads ``sys.modules``: it
never imports TensorFlow. Rooms of the door (``tfps/_tf_*.py``) keep each module under 400
lines; the door re-exports them and checks what they rely on.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect

from tfps import _tf_checkpoint, _tf_coordinator
from tfps._tf_coordinator import closure_name, track_closures, unblock_exit  # rooms
from tfps._tf_keras import (  # rooms
    create_slots,
    keras3_schedule,
    keras_binding,
    keras_symbolic_build,
    optimizer_hyper,
    pin_hyperparameters,
    pss_evaluation_shards,
    read_hyper,
    set_optimizer_hyper,
)
from tfps.errors import TensorFlowCompatibilityError

# What the rooms define is re-exported here: tfps reaches every TF internal through `tfps._tf`.
__all__ = ["closure_name", "create_slots", "keras3_schedule", "keras_binding",
           "keras_symbolic_build", "optimizer_hyper", "pin_hyperparameters",
           "pss_evaluation_shards", "read_hyper", "require", "set_optimizer_hyper",
           "track_closures", "unblock_exit"]

_checked = False


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _sets_attribute(cls, name: str) -> bool:
    """True when some method of `cls` (or a base) assigns ``self.<name>`` (code's co_names)."""
    for klass in inspect.getmro(cls):
        for member in vars(klass).values():
            code = getattr(member, "__code__", None)
            if code is not None and name in code.co_names:
                return True
    return False


def _requirements():
    from tensorflow.python.distribute import (
        distribute_utils,
        input_lib,
        ps_values,
        sharded_variable,
    )
    from tensorflow.python.distribute import parameter_server_strategy_v2 as pss
    from tensorflow.python.distribute.coordinator import cluster_coordinator as coordinator
    from tensorflow.python.eager import context
    from tensorflow.python.framework import func_graph
    from tensorflow.python.trackable import base as trackable_base
    from tf_keras.src.engine import base_layer, training
    from tf_keras.src.optimizers.legacy import optimizer_v2

    return (
        ("distribute_utils.cache_variable_reads", "tensorflow/python/distribute/"
         "distribute_utils.py", lambda: callable(distribute_utils.cache_variable_reads)),
        ("distribute_utils.caching_scope_local.new_cache_scope_count",
         "tensorflow/python/distribute/distribute_utils.py",
         lambda: hasattr(distribute_utils.caching_scope_local, "new_cache_scope_count")),
        ("CachingVariable._cache", "tensorflow/python/distribute/ps_values.py",
         lambda: _sets_attribute(ps_values.CachingVariable, "_cache")),
        ("CachingVariable._current_new_cache_scope_count",
         "tensorflow/python/distribute/ps_values.py",
         lambda: _sets_attribute(ps_values.CachingVariable, "_current_new_cache_scope_count")),
        ("DistributedIterator._get_next_no_partial_batch_handling",
         "tensorflow/python/distribute/input_lib.py",
         lambda: hasattr(input_lib.DistributedIterator, "_get_next_no_partial_batch_handling")),
        ("ParameterServerStrategyV2Extended._num_workers",
         "tensorflow/python/distribute/parameter_server_strategy_v2.py",
         lambda: _sets_attribute(pss.ParameterServerStrategyV2Extended, "_num_workers")),
        ("ParameterServerStrategyV2Extended._num_gpus_per_worker",
         "tensorflow/python/distribute/parameter_server_strategy_v2.py",
         lambda: _sets_attribute(pss.ParameterServerStrategyV2Extended,
                                 "_num_gpus_per_worker")),
        ("FuncGraph.capture", "tensorflow/python/framework/func_graph.py",
         lambda: callable(getattr(func_graph.FuncGraph, "capture", None))),
        ("FuncGraph._functions", "tensorflow/python/framework/ops.py (Graph)",
         lambda: _sets_attribute(func_graph.FuncGraph, "_functions")),
        ("OptimizerV2._hyper", "tf_keras/src/optimizers/legacy/optimizer_v2.py",
         lambda: _sets_attribute(optimizer_v2.OptimizerV2, "_hyper")),
        ("OptimizerV2._get_hyper", "tf_keras/src/optimizers/legacy/optimizer_v2.py",
         lambda: callable(getattr(optimizer_v2.OptimizerV2, "_get_hyper", None))),
        ("OptimizerV2._create_all_weights", "tf_keras/src/optimizers/legacy/optimizer_v2.py",
         lambda: callable(getattr(optimizer_v2.OptimizerV2, "_create_all_weights", None))),
        ("Model._pss_evaluation_shards", "tf_keras/src/engine/training.py",
         lambda: _sets_attribute(training.Model, "_pss_evaluation_shards")),
        ("ShardedVariableMixin sets each shard's _sharded_container",
         "tensorflow/python/distribute/sharded_variable.py",
         lambda: _sets_attribute(sharded_variable.ShardedVariableMixin, "_sharded_container")),
        # tfps.layers (DynamicEmbedding): its tables go one per ps task, and checkpoint as
        # concatenated tensors through TF's Trackable protocol.
        ("ParameterServerStrategyV2Extended._num_ps",
         "tensorflow/python/distribute/parameter_server_strategy_v2.py",
         lambda: _sets_attribute(pss.ParameterServerStrategyV2Extended, "_num_ps")),
        ("Trackable._serialize_to_tensors and _restore_from_tensors",
         "tensorflow/python/trackable/base.py",
         lambda: all(callable(getattr(trackable_base.Trackable, name, None)) for name in
                     ("_serialize_to_tensors", "_restore_from_tensors"))),
        ("Layer._infer_output_signature's '<layer>_scratch_graph'",
         "tf_keras/src/engine/base_layer.py",
         lambda: "_scratch_graph" in base_layer.Layer._infer_output_signature.__code__.co_consts),
        # tfps.train.health: which worker holds which closure (tfps/_tf_coordinator.py).
        ("ClusterCoordinator._cluster: Cluster.workers, closure_queue; Worker._process_closure"
         " (its thread's); the queue's mark_finished, put_back, mark_failed",
         "tensorflow/python/distribute/coordinator/cluster_coordinator.py",
         lambda: _tf_coordinator.trackable(coordinator)),
        ("Context._config (the base ConfigProto sent to every task)",
         "tensorflow/python/eager/context.py",
         lambda: _sets_attribute(context.Context, "_config")),
        # tfps.checkpoints: one traced write per checkpoint (tfps/_tf_checkpoint.py).
        *_tf_checkpoint.requirements(__import__("tensorflow"), checkpoint_internals()),
    )


def set_thread_spinning(spinning: bool) -> None:
    """Whether thread pools spin (``disable_thread_spinning``), in this process's eager context
    and every task's it connects to: `connect_to_cluster` sends `Context.config`, built on
    `Context._config` (eager/context.py), to each as ``default_session_config``."""
    from tensorflow.python.eager import context

    ctx = context.context()
    config = require().compat.v1.ConfigProto()
    if ctx._config is not None:
        config.CopyFrom(ctx._config)
    config.experimental.disable_thread_spinning = not spinning
    ctx._config = config


def checkpoint_internals() -> tuple:
    """``(graph_view, util, sharded_variable)``: what `tfps._tf_checkpoint` reads."""
    from tensorflow.python.checkpoint import graph_view, util
    from tensorflow.python.distribute import sharded_variable
    return graph_view, util, sharded_variable


def traced_write_checkpoint(**objects):
    """A `tf.train.Checkpoint` whose saves reuse one traced write (`tfps._tf_checkpoint`)."""
    return _tf_checkpoint.traced_write_checkpoint(require(), checkpoint_internals(), **objects)


def require():
    """Imports TensorFlow, checks every internal tfps uses (once), returns the module.

    Raises:
      TensorFlowCompatibilityError: one line naming the TF version and the missing internal.
    """
    global _checked
    import tensorflow as tf

    if _checked:
        return tf
    try:
        requirements = _requirements()
        missing = [(what, where) for what, where, present in requirements if not present()]
    except ImportError as e:  # a whole module moved
        missing = [(f"module {e.name or e}", "an import")]
    if missing:
        what, where = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TensorFlowCompatibilityError(
            f"tfps cannot run on tensorflow {_distribution_version('tensorflow')} with "
            f"tf-keras {_distribution_version('tf-keras')}: it needs {what} from {where}, "
            f"which this version lacks{more}; install the versions tfps is tested with "
            f"(setup.cfg) or see docs/getting-started.md, 'Trying a newer TensorFlow'")
    _checked = True
    return tf


# ------------------------------------------------------------------- strategies and iterators
def num_workers(strategy) -> int:
    """Workers of a ParameterServerStrategy (`ParameterServerStrategyV2Extended._num_workers`;
    the public `Strategy.cluster_resolver` is None for PSS)."""
    return int(strategy.extended._num_workers)


def num_ps(strategy) -> int:
    """ps tasks of a ParameterServerStrategy (`ParameterServerStrategyV2Extended._num_ps`;
    PSS has no public `parameter_devices`)."""
    return int(strategy.extended._num_ps)


def gpus_per_worker(strategy) -> int:
    """GPUs each worker uses (`ParameterServerStrategyV2Extended._num_gpus_per_worker`)."""
    return int(getattr(strategy.extended, "_num_gpus_per_worker", 0))


def next_without_partial_batch(iterator):
    """``next(iterator)`` for a per-worker iterator inside a closure, without the Optional and
    ``tf.cond`` PSS adds for partial batches (`DistributedIterator.
    _get_next_no_partial_batch_handling`, input_lib.py; docs/tensorflow-notes.md)."""
    plain = getattr(iterator, "_get_next_no_partial_batch_handling", None)
    return plain() if plain is not None else next(iterator)


# ------------------------------------------------------------------- variable read cache
@contextlib.contextmanager
def cache_variable_reads(variables):
    """`distribute_utils.cache_variable_reads` with every variable's cache emptied and its
    freshness counter synced to this thread's scope count first (ps_values.py,
    `CachingVariable`; docs/tensorflow-notes.md, "Read cache").
    """
    from tensorflow.python.distribute import distribute_utils

    with distribute_utils.cache_variable_reads():
        count = distribute_utils.caching_scope_local.new_cache_scope_count
        for var in variables:
            if hasattr(var, "_cache"):
                var._cache = None
                var._current_new_cache_scope_count = count
        yield


def cached_read(variable):
    """The local copy `cache_variable_reads` holds for `variable`, or None."""
    return getattr(variable, "_cache", None)


def capture(tensor):
    """`tensor` captured into the FuncGraph being built (a loop body's placeholder for it)."""
    import tensorflow as tf

    return tf.compat.v1.get_default_graph().capture(tensor)


# ------------------------------------------------------------------- traced graphs
def function_graphs(graph) -> dict:
    """Name -> FuncGraph of the functions a traced graph calls (a `tf.while_loop`'s body and
    cond, a `tf.cond`'s branches): ``FuncGraph._functions`` (func_graph.py) holds them, for the
    graph and its outer graphs."""
    found = {}
    while graph is not None:
        for name, fn in getattr(graph, "_functions", {}).items():
            inner = getattr(fn, "graph", None)
            if inner is not None:
                found.setdefault(name, inner)
        graph = getattr(graph, "outer_graph", None)
    return found


def function_def_to_graph(function_def):
    """The FuncGraph of a FunctionDef from a saved graph's library
    (``tensorflow/python/framework/function_def_to_graph.py``)."""
    from tensorflow.python.framework import function_def_to_graph as convert

    return convert.function_def_to_graph(function_def)


def fill_read_cache(variable, tensor) -> None:
    """Makes `tensor` what `variable`'s reads return inside the current
    `cache_variable_reads` scope (`CachingVariable._cache`, ps_values.py)."""
    from tensorflow.python.distribute import distribute_utils

    variable._cache = tensor
    variable._current_new_cache_scope_count = (
        distribute_utils.caching_scope_local.new_cache_scope_count)


@contextlib.contextmanager
def intercept_sparse_reads(variables, reader):
    """Inside the block, ``var.sparse_read(indices, name=None)`` (what `tf.gather` and every
    embedding lookup call on a resource variable, array_ops.py `gather`) becomes
    ``reader(var, original_sparse_read, indices)`` for each of `variables`. Meant for tracing:
    the traced graph keeps what the reader built."""
    patched = []
    try:
        for var in variables:
            if "sparse_read" in vars(var):  # already intercepted (nested): keep the outer one
                continue
            original = var.sparse_read

            def read(indices, name=None, _var=var, _original=original):
                return reader(_var, _original, indices)

            var.sparse_read = read
            patched.append(var)
        yield
    finally:
        for var in patched:
            del var.sparse_read


def sharded_container(variable):
    """The `ShardedVariable` that `variable` is a shard of, or None (each shard holds a weak
    reference to it, ``_sharded_container``, sharded_variable.py `ShardedVariableMixin`).
    tf_keras lists a sharded variable's shards one by one in ``model.weights``."""
    ref = getattr(variable, "_sharded_container", None)
    return ref() if callable(ref) else None


_TENSOR_TRACKABLE = None


def tensor_trackable():
    """A base class for objects that checkpoint as a dict of tensors: a subclass defines
    ``checkpoint_tensors() -> {name: tensor}`` and ``restore_tensors(tensors) -> op``. They are
    TF's Trackable protocol (`Trackable._serialize_to_tensors`, `_restore_from_tensors`,
    tensorflow/python/trackable/base.py; TF's own lookup tables checkpoint this way), so the
    object saves and restores with the rest of a `tf.train.Checkpoint`, atomically."""
    global _TENSOR_TRACKABLE
    if _TENSOR_TRACKABLE is None:
        tf = require()

        class TensorTrackable(tf.__internal__.tracking.Trackable):
            def _serialize_to_tensors(self):
                return self.checkpoint_tensors()

            def _restore_from_tensors(self, restored_tensors):
                return self.restore_tensors(restored_tensors)

        _TENSOR_TRACKABLE = TensorTrackable
    return _TENSOR_TRACKABLE
