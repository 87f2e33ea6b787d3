"""Callbacks `tfps.keras.fit` adds under ParameterServerStrategy: a line per epoch, epoch
checkpoints with the names the side-car evaluator watches, and `BackupAndRestore` (kept after
`fit`, so a later `fit` with the same ``model_dir`` resumes)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import tf_keras

from tfps import validate

# Under model_dir (re-exported as tfps.keras's): BackupAndRestore's state and the weight
# checkpoints `ckpt-<epoch>` that the side-car evaluator watches.
from tfps.checkpoints.layout import BACKUP_SUBDIR, CHECKPOINT_SUBDIR, backup_dir, checkpoint_dir

__all__ = ["BACKUP_SUBDIR", "CHECKPOINT_SUBDIR", "EpochCheckpoint", "ProgressLogger",
           "default_callbacks"]


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
        self._every = validate.integer("checkpoint_epochs", every, low=1)

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
    kept when `fit` ends: the next `fit` with this `model_dir` and more epochs trains only the
    epochs after the last one (with as many epochs, none), on any number of ps tasks
    (`tfps.keras.fit` creates the optimizer's slots before the restore).
    """
    result = []
    if model_dir:
        # Kept after fit (delete_checkpoint=False): the next fit with this model_dir resumes
        # after its last epoch, as the Trainer resumes from its last checkpoint.
        result.append(tf_keras.callbacks.BackupAndRestore(
            backup_dir(model_dir), save_freq="epoch", delete_checkpoint=False))
        result.append(EpochCheckpoint(checkpoint_dir(model_dir), every=checkpoint_epochs))
    if progress:
        result.append(ProgressLogger())
    return result

