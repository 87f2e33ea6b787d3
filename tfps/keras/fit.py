"""`Model.fit` and `Model.evaluate` under ParameterServerStrategy, and what they need: the
strategy, a `DatasetCreator`, and the two `compile` settings that matter (`tfps.policy`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import tf_keras

from tfps import _env, _tf, policy, validate
from tfps.checkpoints import lease as leases
from tfps.errors import ConfigError
from tfps.keras.callbacks import ProgressLogger, default_callbacks
from tfps.keras.health import FitHealth, Observers, watch
from tfps.strategy import shards

tf = _tf.require()

__all__ = ["create_slots", "dataset_creator", "evaluate", "evaluation_shards", "fit",
           "make_strategy", "num_workers", "steps_per_execution"]


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
    if not isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        raise validate.fail("strategy", strategy, "a ParameterServerStrategy")
    return _tf.num_workers(strategy)


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
                        max_steps: int = policy.MAX_STEPS_PER_EXECUTION) -> int:
    """A `compile(steps_per_execution=...)` for PSS: training steps per scheduled closure.

    Each closure pays one round of RPCs to the ps tasks, so packing steps speeds small models
    up several-fold. But callbacks run between closures and an epoch is never split
    mid-closure, so the value aims at a few closures per worker and epoch, at most
    `max_steps` steps each, and divides `steps_per_epoch` so that all closures are equal
    (`tfps.policy.steps_per_execution`).

    Args:
      steps_per_epoch: training steps per epoch.
      workers: the number of workers, or the strategy.
      max_steps: upper bound.

    >>> steps_per_execution(200, 2), steps_per_execution(1000, 2), steps_per_execution(7, 4)
    (25, 100, 1)
    """
    workers = workers if isinstance(workers, int) else num_workers(workers)
    return policy.steps_per_execution(steps_per_epoch, workers, max_steps=max_steps)


def evaluation_shards(workers, num_batches: int | None = None) -> int:
    """A `compile(pss_evaluation_shards=...)`: shards for exactly-once evaluation.

    5 per worker (tf_keras's ``"auto"``), but never more than the evaluation data has
    batches: TF's auto-sharding fails with "Could not apply FILE based sharding: the dataset
    only has 1 file(s), which is not enough for the required N shards" when a dataset has
    fewer batches than shards (seen on TF 2.21 with `from_tensor_slices(...).batch(...)`).

    Args:
      workers: the number of workers, or the strategy.
      num_batches: batches in the evaluation dataset, if known.
    """
    workers = workers if isinstance(workers, int) else num_workers(workers)
    return policy.eval_shards(workers, num_batches)


# ------------------------------------------------------------------------------ fit / evaluate
def fit(model, x, *, epochs: int, steps_per_epoch: int | None = None,
        model_dir: str | None = None,
        checkpoint_epochs: int = 1, validation_data=None, callbacks: Iterable = (),
        progress: bool = True, verbose: int | str = 0, **kwargs):
    """`model.fit` under PSS: dataset function, backups, checkpoints, per-epoch progress.

    Under the Trainer's reliability rules (docs/reliability.md): with a `model_dir`, the lease
    of that directory is taken before the first write (a second job on a live `model_dir`
    exits 2 with one line) and released when `fit` returns; under ``tfps-launch`` the chief
    reports to its launcher (a frozen chief is replaced, and resumes after its last epoch) and
    serves the Trainer's metrics with ``--metrics-port`` (`tfps.keras.health`).

    Args:
      model: a tf_keras model built and compiled under the strategy's scope.
      x: a dataset function (see `dataset_creator`), a `DatasetCreator`, a dataset, or a
        `tfps.data.FileInput` (files: each worker reads its contiguous share of the records,
        repeated; steps per epoch from the data. Keras schedules the epoch's steps on the
        workers as they come free, so an epoch visits each record about once; exactly once
        per epoch, also when workers die, is `tfps.Trainer(data=...)`: docs/data.md).
      epochs: number of epochs.
      steps_per_epoch: steps per epoch (required under PSS: the data is infinite), or None
        with a `tfps.data.FileInput` (``ceil(records / batch_size)``).
      model_dir: where `BackupAndRestore` and the ``ckpt-<epoch>`` checkpoints go; None for
        neither. A `model_dir` from an earlier `fit` (on any number of ps tasks) resumes
        after its last epoch: weights, optimizer slots and step count.
      checkpoint_epochs: save a checkpoint every this many epochs (and after the last).
      validation_data: a finite `tf.data.Dataset` (or a function returning one), evaluated
        exactly once per epoch when the model was compiled with ``pss_evaluation_shards``.
      callbacks: more callbacks (epoch-level only under PSS).
      progress: add a `ProgressLogger`.
      verbose: passed to `fit`; 0 by default because `ProgressLogger` prints (PSS refuses 1).
      **kwargs: passed to `model.fit`.

    Returns:
      The `History` of `model.fit`.

    Raises:
      tfps.checkpoints.lease.ModelDirInUse: another live job holds `model_dir` (exit 2).
      tfps.checkpoints.lease.LeaseLost: another job took `model_dir` over mid-way.
    """
    validate.integer("epochs", epochs, low=1, high=10**9)
    if steps_per_epoch is None and hasattr(x, "steps_per_epoch"):  # tfps.data.FileInput
        files, steps_per_epoch = x, x.steps_per_epoch
        x = lambda input_context: files(input_context).repeat()  # noqa: E731
    validate.integer("steps_per_epoch", steps_per_epoch, low=1, high=10**12)
    _refuse_dynamic_embeddings(model)
    if verbose == 1:
        raise ConfigError("Argument `verbose` must be 0, 2 or 'auto': Keras fit under "
                          "ParameterServerStrategy has no progress bar (tfps.keras prints a "
                          "line per epoch instead). Received: verbose=1")
    if not isinstance(x, (tf.data.Dataset, tf_keras.utils.experimental.DatasetCreator)):
        x = dataset_creator(x)
    if callable(validation_data) and not isinstance(validation_data, tf.data.Dataset):
        validation_data = validation_data()
    defaults = default_callbacks(model_dir, checkpoint_epochs=checkpoint_epochs,
                                 progress=progress)
    writers = [cb for cb in defaults if not isinstance(cb, ProgressLogger)]
    loggers = [cb for cb in defaults if isinstance(cb, ProgressLogger)]
    # Reports and metrics first: a chief that waits on a lease held elsewhere still reports.
    observers = watch(model.distribute_strategy) if _is_pss(model) else Observers()
    lease = leases.hold(model_dir) if model_dir else None  # before any write to it
    try:
        health = FitHealth(observers, lease)
        writers = [health, *writers, health.after_writes]
        create_slots(model)  # before BackupAndRestore restores, on any number of ps tasks
        return model.fit(x, epochs=epochs, steps_per_epoch=steps_per_epoch,
                         validation_data=validation_data,
                         callbacks=[*writers, *loggers, *callbacks], verbose=verbose, **kwargs)
    finally:
        if lease is not None:
            lease.release()


def _is_pss(model) -> bool:
    return isinstance(getattr(model, "distribute_strategy", None),
                      tf.distribute.experimental.ParameterServerStrategy)


def _refuse_dynamic_embeddings(model) -> None:
    """tf_keras `fit` has no step hook for the per-row updates of a `DynamicEmbedding`
    (`tfps.layers`): its rows are not variables, so `fit`'s optimizer would never train them."""
    from tfps.layers.dynamic_embedding import tables_of

    tables = tables_of(model)
    if tables:
        names = ", ".join(repr(t.name) for t in tables)
        raise ConfigError(f"Argument `model` has DynamicEmbedding layers ({names}), which train "
                          f"only with tfps.Trainer: Keras fit has no step hook for their row "
                          f"updates. Received: model with {len(tables)} DynamicEmbedding "
                          f"layer(s)")


def create_slots(model) -> None:
    """Creates the optimizer's slots for `model`'s variables now (values unchanged).

    `BackupAndRestore` restores in ``on_train_begin``, before the first update creates the
    slots. Restored then, the slots of a sharded variable go into one full-size variable on
    the chief and are dropped at the first update, which makes fresh ones per shard: a resumed
    job silently restarts Adagrad's accumulators and Adam's moments (keras-team/tf-keras#838;
    docs/tensorflow-notes.md, "Sharded models in SavedModels and resharded checkpoints").
    With the slots made first, TF restores each into its shards, whatever the number of ps
    tasks the backup was written with. Only tf_keras legacy optimizers (the ones PSS `fit`
    runs) need it; others are left alone.
    """
    optimizer = getattr(model, "optimizer", None)
    if not isinstance(optimizer, tf_keras.optimizers.legacy.Optimizer):
        return
    variables = [part for var in model.trainable_variables for part in shards(var)]
    with model.distribute_strategy.scope():
        _tf.create_slots(optimizer, variables)


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
    shards = _tf.pss_evaluation_shards(model)
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

