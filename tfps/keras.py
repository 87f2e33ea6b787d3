"""Keras `Model.fit` on parameter servers: tf_keras under ParameterServerStrategy, made plain.

Only tf_keras (Keras 2, `TF_USE_LEGACY_KERAS=1`) can `fit` under ParameterServerStrategy;
Keras 3 cannot (keras-team/keras#18624). Importing this module raises
`tfps.errors.KerasBindingError` when `tf.keras` in this process is already Keras 3, with what
to do. `import tfps` (or `tfps-launch`) sets the variable before TensorFlow reads it.

What the helpers take care of:

* `make_strategy`: the strategy from the environment (TF_CONFIG or Slurm), checked for tf_keras.
* `dataset_creator`: wraps a dataset function in the `DatasetCreator` that `fit` needs under
  PSS, sharding it per worker.
* `steps_per_execution`, `evaluation_shards`: the two `compile` settings that matter under PSS
  (steps per scheduled closure; exactly-once evaluation shards, ``pss_evaluation_shards``).
* `fit`: `Model.fit` with `BackupAndRestore` and checkpoints under ``model_dir`` and a
  `ProgressLogger` line per epoch (PSS refuses ``verbose=1``, the progress bar).
* `evaluate`: exactly-once `Model.evaluate`, with the shard count checked up front.
* `run_sidecar_evaluator`, `is_evaluator`: the side-car evaluator task (``tfps-launch
  --evaluator``), on tf_keras's `SidecarEvaluator`.

Example (on an in-process cluster; under `tfps-launch` call ``make_strategy()``)::

    import tfps, tfps.keras, tf_keras, tensorflow as tf

    strategy = tfps.keras.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=2))
    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.Input((8,)), tf_keras.layers.Dense(4)])
        model.compile(tf_keras.optimizers.legacy.Adam(0.01),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"],
                      steps_per_execution=tfps.keras.steps_per_execution(100, strategy))

    def data():                     # runs on every worker, sharded per worker
        x = tf.random.stateless_normal([1024, 8], seed=[1, 2])
        y = tf.argmax(x[:, :4], axis=1)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32)

    tfps.keras.fit(model, data, epochs=3, steps_per_epoch=100, model_dir="/tmp/run")
    # fit | epoch: 1/3 | step: 100 | steps/sec: 310.5 | loss: 0.6931 | accuracy: 0.7812

This module is ``tfps.keras``; inside the package, ``import keras`` still means Keras 3
(absolute imports). Do not run files of the ``tfps/`` directory as scripts.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from typing import Any, Callable, Iterable

from tfps import _env

_env.require_tf_keras()

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from tfps.cluster import task_from_env  # noqa: E402
from tfps.errors import ClusterSpecError, ConfigError  # noqa: E402

__all__ = [
    "BACKUP_SUBDIR",
    "CHECKPOINT_SUBDIR",
    "EpochCheckpoint",
    "ProgressLogger",
    "dataset_creator",
    "default_callbacks",
    "evaluate",
    "evaluation_shards",
    "fit",
    "is_evaluator",
    "make_strategy",
    "num_workers",
    "run_sidecar_evaluator",
    "steps_per_execution",
]

# Under model_dir: BackupAndRestore's state (deleted when fit ends) and the weight checkpoints
# `ckpt-<epoch>` that the side-car evaluator watches.
BACKUP_SUBDIR = "backup"
CHECKPOINT_SUBDIR = "checkpoints"
# Most steps per closure: field notes measured ~1000 steps/s at 100 per closure vs ~700 at 10,
# so more buys little and only delays callbacks and failure recovery (a lost closure reruns).
_MAX_STEPS_PER_EXECUTION = 100
# Closures per worker per epoch that `steps_per_execution` aims for, so that every worker
# gets work and a slow worker cannot hold up the end of the epoch by much.
_CLOSURES_PER_WORKER = 4
# tf_keras's own `pss_evaluation_shards="auto"` heuristic (training.py, _infer_exact_eval_shards).
_SHARDS_PER_WORKER = 5


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Argument `{name}` must be a positive integer. "
                          f"Received: {name}={value!r}")
    return value


# ------------------------------------------------------------------------------ strategy
def make_strategy(cluster=None, **kwargs):
    """The ParameterServerStrategy for `fit`: `tfps.make_strategy` after a tf_keras check.

    Args:
      cluster: a `tfps.Cluster`, a cluster resolver (`tfps.in_process_cluster`), or None to
        read TF_CONFIG or Slurm (what `tfps-launch` sets for the chief).
      **kwargs: passed to `tfps.make_strategy` (``partitioner``, ``min_shard_bytes``, ...).

    Raises:
      tfps.errors.KerasBindingError: `tf.keras` is Keras 3 in this process.
    """
    from tfps.strategy import make_strategy as _make_strategy

    _env.require_tf_keras()
    return _make_strategy(cluster, **kwargs)


def num_workers(strategy) -> int:
    """Number of worker tasks of a ParameterServerStrategy."""
    # The public `Strategy.cluster_resolver` is None for PSS on TF 2.21: it reads
    # `extended._cluster_resolver`, but PSS keeps the resolver on the strategy itself
    # (parameter_server_strategy_v2.py, `self._cluster_resolver = cluster_resolver`).
    resolver = strategy.cluster_resolver or getattr(strategy, "_cluster_resolver", None)
    if resolver is None:
        raise ConfigError(f"Argument `strategy` must be a ParameterServerStrategy. "
                          f"Received: strategy={strategy!r:.80}")
    return len(resolver.cluster_spec().as_dict().get("worker", ()))


def is_evaluator(environ=None) -> bool:
    """True in the side-car evaluator task (TF_CONFIG or Slurm say ``evaluator``)."""
    environ = os.environ if environ is None else environ
    if not environ.get("TF_CONFIG") and "SLURM_PROCID" not in environ:
        return False
    try:
        return task_from_env(environ).type == "evaluator"
    except ClusterSpecError:
        # An evaluator TF_CONFIG that lists only the evaluator (as tfps itself wrote before
        # 7828b3a, and as some setups do to keep it out of the coordinator's cluster,
        # tensorflow#46169) is rejected by `task_from_env` as a cluster without ps or
        # worker. The task type is all that is needed here.
        try:
            task = json.loads(environ.get("TF_CONFIG") or "{}").get("task") or {}
        except (ValueError, AttributeError):
            raise ClusterSpecError(f"not valid JSON: {environ.get('TF_CONFIG')!r:.80}",
                                   "TF_CONFIG") from None
        if isinstance(task, dict) and task.get("type") == "evaluator":
            return True
        raise


# ------------------------------------------------------------------------------ data
def dataset_creator(dataset_fn: Callable, *, input_options=None):
    """Wraps `dataset_fn` in the `DatasetCreator` that `fit` needs under PSS.

    `dataset_fn` runs once per worker (traced on the chief). With one parameter it receives
    the `tf.distribute.InputContext` and shards itself; with none, its dataset is sharded
    here by worker (``dataset.shard(num_input_pipelines, input_pipeline_id)``), so workers
    see disjoint data. Return an infinite (``repeat()``) dataset and give `fit` a
    ``steps_per_epoch``.

    Raises:
      tfps.errors.ConfigError: `dataset_fn` is not callable.
    """
    if not callable(dataset_fn):
        raise ConfigError(f"Argument `dataset_fn` must be a function returning a "
                          f"tf.data.Dataset. Received: dataset_fn={dataset_fn!r:.80}")
    if isinstance(dataset_fn, tf_keras.utils.experimental.DatasetCreator):
        return dataset_fn
    if _takes_an_argument(dataset_fn):
        wrapped = dataset_fn
    else:
        def wrapped(input_context):
            return dataset_fn().shard(input_context.num_input_pipelines,
                                      input_context.input_pipeline_id)
    return tf_keras.utils.experimental.DatasetCreator(wrapped, input_options=input_options)


def _takes_an_argument(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in params)


# ------------------------------------------------------------------------------ compile
def steps_per_execution(steps_per_epoch: int, workers, *,
                        max_steps: int = _MAX_STEPS_PER_EXECUTION) -> int:
    """A `compile(steps_per_execution=...)` for PSS: training steps per scheduled closure.

    Each closure pays one round of RPCs to the ps tasks, so packing steps speeds small models
    up several-fold (field notes: 1 step/closure ~200 steps/s, 10 ~700, 100 ~1000). But
    callbacks run between closures and an epoch is never split mid-closure, so the value aims
    at ``4 × workers`` closures per epoch, at most `max_steps` steps each, and divides
    `steps_per_epoch` so that all closures are equal.

    Args:
      steps_per_epoch: training steps per epoch.
      workers: the number of workers, or the strategy.
      max_steps: upper bound.

    >>> steps_per_execution(200, 2), steps_per_execution(1000, 2), steps_per_execution(7, 4)
    (25, 100, 1)
    """
    _positive_int("steps_per_epoch", steps_per_epoch)
    _positive_int("max_steps", max_steps)
    workers = workers if isinstance(workers, int) else num_workers(workers)
    _positive_int("workers", workers)
    bound = max(1, min(max_steps, steps_per_epoch // (_CLOSURES_PER_WORKER * workers)))
    return max(d for d in range(1, bound + 1) if steps_per_epoch % d == 0)


def evaluation_shards(workers, num_batches: int | None = None) -> int:
    """A `compile(pss_evaluation_shards=...)`: shards for exactly-once evaluation.

    tf_keras's ``"auto"`` (5 per worker), but never more than the evaluation data has
    batches: TF's auto-sharding fails with "Could not apply FILE based sharding: the dataset
    only has 1 file(s), which is not enough for the required N shards" when a dataset has
    fewer batches than shards (seen on TF 2.21 with `from_tensor_slices(...).batch(...)`).

    Args:
      workers: the number of workers, or the strategy.
      num_batches: batches in the evaluation dataset, if known.
    """
    workers = workers if isinstance(workers, int) else num_workers(workers)
    shards = _SHARDS_PER_WORKER * _positive_int("workers", workers)
    if num_batches is not None:
        shards = min(shards, _positive_int("num_batches", num_batches))
    return shards


# ------------------------------------------------------------------------------ callbacks
class ProgressLogger(tf_keras.callbacks.Callback):
    """One line per epoch, for `fit` under PSS (which refuses ``verbose=1``):

        fit | epoch: 2/5 | step: 200 | steps/sec: 412.3 | loss: 0.4127 | accuracy: 0.8906

    ``step`` is the optimizer's iteration count (it survives a restart through
    `BackupAndRestore`); ``steps/sec`` is measured over the epoch on the chief.

    Args:
      print_fn: where lines go (default: `print` to stdout, flushed).
    """

    def __init__(self, print_fn: Callable[[str], Any] | None = None):
        super().__init__()
        self._print = print_fn or (lambda line: print(line, flush=True))
        self._start = None
        self._start_step = None

    def _step(self) -> int | None:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        return None if iterations is None else int(iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._start_step = time.perf_counter(), self._step()

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        parts = [f"fit | epoch: {epoch + 1}/{self.params.get('epochs', '?')}"]
        if step is not None:
            parts.append(f"step: {step}")
            if self._start is not None and self._start_step is not None:
                elapsed = time.perf_counter() - self._start
                if elapsed > 0:
                    parts.append(f"steps/sec: {(step - self._start_step) / elapsed:.1f}")
        parts += [f"{key}: {float(value):.4g}" for key, value in (logs or {}).items()
                  if _is_scalar(value)]
        self._print(" | ".join(parts))


def _is_scalar(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


class EpochCheckpoint(tf_keras.callbacks.ModelCheckpoint):
    """Saves the weights to ``<directory>/ckpt-<epoch>`` every `every` epochs and after the
    last one: the names tf_keras's `SidecarEvaluator` expects (``save_weights_only``).

    Only epoch-level saving is offered: under PSS tf_keras skips batch-level callbacks'
    state (`BackupAndRestore.on_train_batch_end` returns early for PSS).
    """

    def __init__(self, directory: str, every: int = 1):
        super().__init__(os.path.join(directory, "ckpt-{epoch}"), save_weights_only=True,
                         save_freq="epoch")
        self._every = _positive_int("checkpoint_epochs", every)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self._every == 0 or done == self.params.get("epochs"):
            super().on_epoch_end(epoch, logs)


def default_callbacks(model_dir: str | None, *, checkpoint_epochs: int = 1,
              progress: bool = True) -> list:
    """The callbacks `fit` adds: `BackupAndRestore` and `EpochCheckpoint` under `model_dir`
    (``backup/``, ``checkpoints/``), and a `ProgressLogger`.

    With `BackupAndRestore`, a chief that is killed and restarted with the same `model_dir`
    resumes from the last finished epoch (weights, optimizer state, epoch counter); under PSS
    it backs up once per epoch (tf_keras skips batch-level backups for PSS). The backup is
    deleted when `fit` ends, so the next run with this `model_dir` trains from scratch.
    """
    result = []
    if model_dir:
        result.append(tf_keras.callbacks.BackupAndRestore(
            os.path.join(model_dir, BACKUP_SUBDIR), save_freq="epoch"))
        result.append(EpochCheckpoint(os.path.join(model_dir, CHECKPOINT_SUBDIR),
                                      every=checkpoint_epochs))
    if progress:
        result.append(ProgressLogger())
    return result


# ------------------------------------------------------------------------------ fit / evaluate
def fit(model, x, *, epochs: int, steps_per_epoch: int, model_dir: str | None = None,
        checkpoint_epochs: int = 1, validation_data=None, callbacks: Iterable = (),
        progress: bool = True, verbose: int | str = 0, **kwargs):
    """`model.fit` under PSS: dataset function, backups, checkpoints, per-epoch progress.

    Args:
      model: a tf_keras model built and compiled under the strategy's scope.
      x: a dataset function (see `dataset_creator`), a `DatasetCreator`, or a dataset.
      epochs: number of epochs.
      steps_per_epoch: steps per epoch (required under PSS: the data is infinite).
      model_dir: where `BackupAndRestore` and the ``ckpt-<epoch>`` checkpoints go; None for
        neither.
      checkpoint_epochs: save a checkpoint every this many epochs (and after the last).
      validation_data: a finite `tf.data.Dataset` (or a function returning one), evaluated
        exactly once per epoch when the model was compiled with ``pss_evaluation_shards``.
      callbacks: more callbacks (epoch-level only under PSS).
      progress: add a `ProgressLogger`.
      verbose: passed to `fit`; 0 by default because `ProgressLogger` prints (PSS refuses 1).
      **kwargs: passed to `model.fit`.

    Returns:
      The `History` of `model.fit`.
    """
    _positive_int("epochs", epochs)
    _positive_int("steps_per_epoch", steps_per_epoch)
    if verbose == 1:
        raise ConfigError("Argument `verbose` must be 0, 2 or 'auto': Keras fit under "
                          "ParameterServerStrategy has no progress bar (tfps.keras prints a "
                          "line per epoch instead). Received: verbose=1")
    if not isinstance(x, (tf.data.Dataset, tf_keras.utils.experimental.DatasetCreator)):
        x = dataset_creator(x)
    if callable(validation_data) and not isinstance(validation_data, tf.data.Dataset):
        validation_data = validation_data()
    all_callbacks = [*default_callbacks(model_dir, checkpoint_epochs=checkpoint_epochs,
                                        progress=progress), *callbacks]
    return model.fit(x, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     validation_data=validation_data, callbacks=all_callbacks,
                     verbose=verbose, **kwargs)


def evaluate(model, data, **kwargs) -> dict[str, float]:
    """`model.evaluate` returning ``{metric: float}``; exactly once per example when the
    model was compiled with ``pss_evaluation_shards`` (even if workers fail mid-way).

    Args:
      model: a compiled tf_keras model.
      data: a finite `tf.data.Dataset`, or a function returning one.
      **kwargs: passed to `model.evaluate`.

    Raises:
      tfps.errors.ConfigError: the dataset has fewer batches than evaluation shards.
    """
    if callable(data) and not isinstance(data, tf.data.Dataset):
        data = data()
    shards = getattr(model, "_pss_evaluation_shards", 0)
    if shards and isinstance(data, tf.data.Dataset):
        batches = int(data.cardinality().numpy())
        if 0 <= batches < shards:
            raise ConfigError(
                f"Argument `data` must have at least as many batches as the model's "
                f"pss_evaluation_shards ({shards}); compile with "
                f"pss_evaluation_shards=tfps.keras.evaluation_shards(strategy, {batches}). "
                f"Received: data with {batches} batches")
    kwargs.setdefault("verbose", 0)
    logs = model.evaluate(data, return_dict=True, **kwargs)
    return {key: float(value) for key, value in logs.items()}


# ------------------------------------------------------------------------------ evaluator
class _EvaluationLogger(tf_keras.callbacks.Callback):
    def __init__(self, print_fn):
        super().__init__()
        self.print_fn = print_fn
        self.results: list[dict[str, float]] = []

    def on_test_end(self, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items() if _is_scalar(v)}
        optimizer = getattr(self.model, "optimizer", None)
        step = int(optimizer.iterations.numpy()) if optimizer is not None else -1
        self.results.append(values)
        self.print_fn(" | ".join([f"evaluator | step: {step}",
                                  *(f"{k}: {v:.4g}" for k, v in values.items())]))


def run_sidecar_evaluator(model_fn: Callable[[], Any], data_fn: Callable[[], Any],
                          model_dir: str, *, steps: int | None = None,
                          max_evaluations: int | None = None,
                          print_fn: Callable[[str], Any] | None = None) -> dict[str, float]:
    """Runs the side-car evaluator: evaluates each new checkpoint of ``model_dir``.

    What the evaluator task's script calls (``tfps-launch --evaluator`` runs the chief's
    script there too; branch on `is_evaluator`). It runs no TF server and uses no strategy:
    it loads the ``ckpt-<epoch>`` weights that `fit` saves under ``model_dir/checkpoints``
    into ``model_fn()`` and evaluates ``data_fn()`` with tf_keras's `SidecarEvaluator`,
    printing one line per evaluation (``evaluator | step: 300 | accuracy: 0.91``).

    Args:
      model_fn: builds and compiles (with metrics, and the training optimizer) the model.
      data_fn: returns the evaluation data (a finite `tf.data.Dataset`).
      model_dir: the chief's `model_dir`.
      steps: batches per evaluation; None for the whole dataset.
      max_evaluations: stop after the checkpoint ``ckpt-<max_evaluations>`` (pass `epochs`);
        None waits for new checkpoints until the process is stopped.
      print_fn: where lines go (default: stdout, flushed).

    Returns:
      The metrics of the last evaluation.
    """
    _env.require_tf_keras()
    if max_evaluations is not None:
        _positive_int("max_evaluations", max_evaluations)
    printer = _EvaluationLogger(print_fn or (lambda line: print(line, flush=True)))
    model = model_fn()
    tf_keras.utils.SidecarEvaluator(
        model=model, data=data_fn(), checkpoint_dir=os.path.join(model_dir, CHECKPOINT_SUBDIR),
        steps=steps, max_evaluations=max_evaluations, callbacks=[printer]).start()
    return printer.results[-1] if printer.results else {}
