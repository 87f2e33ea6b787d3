"""Checkpoints of a model on ps tasks: restore at start, save on the chief's cadence, and read
one back into a model built elsewhere (`restore_model`, what ``python -m tfps.export`` does).

TF writes a checkpoint's shards under ``ckpt-N_temp/`` (each ps writes its own variables),
renames them into place, then rewrites the ``checkpoint`` record atomically: a save cut short
by a kill leaves the previous checkpoint intact, and a ``_temp`` directory behind
(functional_saver.py says such a directory "can be safely removed"). Every successful save
removes the stale ones.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil

from tfps import _tf
from tfps.checkpoints import lease as leases
from tfps.checkpoints import storage
from tfps.checkpoints.layout import CHECKPOINT_SUBDIR, MODEL_KEY, is_trainer_checkpoint
from tfps.strategy import is_keras3, tf_variable

tf = _tf.require()

__all__ = ["Checkpoints", "Keras3Variables", "restore_model", "trackable"]

log = logging.getLogger(__name__)


class Keras3Variables(tf.Module):
    """What a checkpoint saves of a Keras 3 model: its TF variables, in ``model.variables``
    order (sharded ones whole).

    `tf.train.Checkpoint` cannot save a Keras 3 model whose variable is sharded: the Keras
    variable hands TF's saver the `ShardedVariable` as one tensor, which has no device
    (``AttributeError: 'ShardedVariable' object has no attribute 'device'`` in
    functional_saver.py). The TF variables themselves save as TF saves any sharded variable
    (one entry of the full shape, written shard by shard with slice information, so another
    shard count reads it back), and their optimizer slots are found through them
    (docs/tensorflow-notes.md, "Sharded models in SavedModels and resharded checkpoints").
    """

    def __init__(self, model):
        from tfps.layers.dynamic_embedding import tables_of

        super().__init__(name="keras3_variables")
        self.values = [tf_variable(v) for v in model.variables]
        tables = tables_of(model)
        if tables:  # DynamicEmbedding tables (tfps.layers) are no variables: saved beside
            self.dynamic_tables = tables


def trackable(obj):
    """`obj` as a checkpoint should track it: a Keras 3 model as its `Keras3Variables`."""
    return Keras3Variables(obj) if is_keras3(obj) and hasattr(obj, "variables") else obj


class Checkpoints:
    """A `tf.train.CheckpointManager` over ``objects``, restoring under the strategy's scope.

    The writer of a run: it takes the lease of the run's ``model_dir`` first
    (`tfps.checkpoints.lease`: a second job on the same directory exits 2), and a save that
    fails on storage ends the process with one line (`tfps.checkpoints.storage`).

    Args:
      strategy: the strategy the objects' variables belong to.
      coordinator: its `ClusterCoordinator` (every closure is joined before a save).
      directory: where checkpoints go (a run's `tfps.checkpoints.checkpoint_dir`).
      max_to_keep: checkpoints kept.
      **objects: what to save (``model=..., optimizer=..., step=...``); the model as
        ``model`` (`tfps.checkpoints.MODEL_KEY`), so that `restore_model` finds it.
    """

    def __init__(self, *, strategy, coordinator, directory: str, max_to_keep: int, **objects):
        self._strategy, self._coordinator = strategy, coordinator
        self.directory = directory
        # The lease covers the whole run: model_dir holds checkpoints/ and TensorBoard's files.
        run_dir = (os.path.dirname(directory) if os.path.basename(directory) == CHECKPOINT_SUBDIR
                   else directory)
        self.lease = leases.hold(run_dir)
        # One traced write for every save (TF traces one per save and every ps keeps each).
        self.checkpoint = _tf.traced_write_checkpoint(
            **{name: trackable(obj) for name, obj in objects.items()})
        self._manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                   max_to_keep=max_to_keep)

    @property
    def latest(self) -> str | None:
        return self._manager.latest_checkpoint

    def restore(self) -> str | None:
        """Restores the latest checkpoint, if any; returns its path."""
        path = self.latest
        if path is None:
            return None
        # Under the scope: restoring creates the optimizer's slots (Adagrad accumulators, ...)
        # for variables that already exist, and tf_keras refuses to create them outside the
        # strategy their variables belong to (OptimizerV2.add_slot).
        with self._strategy.scope():
            # expect_partial: checkpoints of earlier tfps versions hold the optimizer's
            # hyperparameters as variables, which are now constants of the closures.
            self.checkpoint.restore(path).expect_partial()
        return path

    def save(self, number: int) -> str:
        """Joins every scheduled closure, writes checkpoint `number`, cleans stale temps.

        Raises:
          tfps.checkpoints.lease.LeaseLost: another job took this run's ``model_dir`` over.
          tfps.checkpoints.storage.StorageFailed: the storage refused the write (one line
            printed; the partial checkpoint removed; the previous one is intact).
        """
        self._coordinator.join()
        self.lease.check()
        try:
            path = self._manager.save(checkpoint_number=number)
        except (tf.errors.OpError, OSError) as e:
            reason = storage.storage_error(e)
            if reason is None:
                raise
            self.remove_stale_temps()
            latest = self.latest
            kept = (f"the last good checkpoint is {os.path.basename(latest)}" if latest
                    else "no checkpoint was written before")
            raise storage.fail("checkpoint", os.path.join(self.directory, f"ckpt-{number}"),
                               reason, kept) from None
        self.remove_stale_temps()
        return path

    def remove_stale_temps(self) -> list[str]:
        """Removes ``*_temp`` directories left by saves that were cut short; returns them."""
        stale = [d for d in glob.glob(os.path.join(glob.escape(self.directory), "*_temp"))
                 if os.path.isdir(d)]
        for directory in stale:
            shutil.rmtree(directory, ignore_errors=True)
            log.info("tfps: removed %s, left by a checkpoint save that was cut short",
                     directory)
        return stale


def restore_model(model, prefix: str) -> None:
    """Reads `model`'s variables from checkpoint `prefix`, whoever wrote it.

    A `tfps.Trainer`'s checkpoint (or a Keras backup) holds the model under ``model/``
    (`tfps.checkpoints.is_trainer_checkpoint`); `tfps.keras.fit`'s epoch checkpoints are
    Keras weights, read with ``load_weights``. TF puts a sharded variable's slices back
    together, whatever the number of ps tasks that wrote them.

    Raises:
      ValueError: the checkpoint holds no model, or its values do not fit `model`'s
        variables (also `AssertionError` or `tf.errors.OpError`, as TF raises them).
    """
    names = [name for name, _ in tf.train.list_variables(prefix)]
    if is_trainer_checkpoint(names):
        status = tf.train.Checkpoint(**{MODEL_KEY: trackable(model)}).read(prefix)
    elif hasattr(model, "load_weights"):
        status = model.load_weights(prefix)
    else:
        raise ValueError(f"it holds no `{MODEL_KEY}` (not a tfps.Trainer checkpoint)")
    status.expect_partial()
    status.assert_existing_objects_matched()
