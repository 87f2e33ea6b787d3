"""Where a training run's checkpoints live, and which one is the latest. Pure Python.

A training run's directory (``model_dir``) holds:

* ``checkpoints/`` (`CHECKPOINT_SUBDIR`): a `tfps.Trainer`'s ``ckpt-<step>`` checkpoints and
  `tfps.keras.fit`'s ``ckpt-<epoch>`` weight checkpoints (what the side-car evaluator
  watches), with TF's state file ``checkpoint`` (`STATE_FILE`), which names the latest;
* ``backup/`` (`BACKUP_SUBDIR`): Keras fit's `BackupAndRestore` state.

TF rewrites the state file atomically at the end of each save (a save cut short leaves the
previous record), so the checkpoint it names is complete. `latest_checkpoint` reads it
without TensorFlow, so that a command can refuse a run without checkpoints before importing
TF. A checkpoint whose objects live under `MODEL_KEY` (``model/...``) was written by a
`tfps.Trainer` (`is_trainer_checkpoint`); Keras fit's are weight checkpoints.

>>> checkpoint_dir("/tmp/run"), checkpoint_number("/tmp/run/checkpoints/ckpt-700")
('/tmp/run/checkpoints', 700)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from tfps._cli import quote
from tfps.errors import ConfigError

__all__ = ["BACKUP_SUBDIR", "CHECKPOINT_SUBDIR", "MODEL_KEY", "STATE_FILE", "backup_dir",
           "checkpoint_dir", "checkpoint_number", "is_trainer_checkpoint",
           "latest_checkpoint", "read_state"]

# Under model_dir: the checkpoints (Trainer's and Keras fit's), and BackupAndRestore's state.
CHECKPOINT_SUBDIR = "checkpoints"
BACKUP_SUBDIR = "backup"
# TF's state file in a checkpoint directory (tf.train.CheckpointManager, ModelCheckpoint).
STATE_FILE = "checkpoint"
# The object a Trainer saves its model under (`tfps.checkpoints.Checkpoints(model=...)`):
# its variables are named model/...
MODEL_KEY = "model"
# The state file's line naming the latest checkpoint (checkpoint_state.proto, text format).
_RECORD = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.M)
# Bigger than any state file TF writes (a few lines per kept checkpoint).
_MAX_RECORD = 1 << 20
_NUMBER = re.compile(r"-([0-9]+)$")


def checkpoint_dir(model_dir: str) -> str:
    """Where a run's checkpoints go: ``model_dir/checkpoints``."""
    return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def backup_dir(model_dir: str) -> str:
    """Where Keras fit's `BackupAndRestore` keeps its state: ``model_dir/backup``."""
    return os.path.join(model_dir, BACKUP_SUBDIR)


def checkpoint_number(prefix: str) -> int | None:
    """The number of checkpoint ``.../ckpt-<number>`` (a step or an epoch); None if none."""
    found = _NUMBER.search(prefix)
    return int(found.group(1)) if found else None


def is_trainer_checkpoint(names: Iterable[str]) -> bool:
    """Whether variable `names` (``tf.train.list_variables``) hold a Trainer's model: some
    live under ``model/``. Keras weight checkpoints do not."""
    return any(name.startswith(MODEL_KEY + "/") for name in names)


def read_state(directory: str) -> str | None:
    """The prefix of the latest checkpoint that `directory`'s state file names (absolute, or
    joined to `directory`); None when there is no state file.

    Raises:
      ConfigError: the state file names no checkpoint.
    """
    state = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(state):
        return None
    with open(state, "rb") as f:
        text = f.read(_MAX_RECORD).decode("utf-8", "replace")
    found = _RECORD.search(text)
    if not found:
        raise ConfigError(f"{state} names no checkpoint")
    prefix = found.group(1).encode().decode("unicode_escape")
    return prefix if os.path.isabs(prefix) else os.path.join(directory, prefix)


def latest_checkpoint(model_dir: str, name: str = "model_dir") -> str:
    """The prefix of the latest checkpoint under `model_dir` (``checkpoints/`` or itself).

    Args:
      model_dir: a training run's directory, or a directory of checkpoints.
      name: what the messages call `model_dir` (a command line's ``--model_dir``).

    Raises:
      ConfigError: no such directory, no state file, or the checkpoint it names is missing.
    """
    quoted = quote(model_dir)
    if not os.path.isdir(model_dir):
        what = "does not exist" if not os.path.lexists(model_dir) else "is not a directory"
        raise ConfigError(f"{name} {quoted} {what}")
    for directory in (checkpoint_dir(model_dir), model_dir):
        try:
            prefix = read_state(directory)
        except ConfigError as e:
            raise ConfigError(f"{name} {quoted}: {e}") from None
        if prefix is None:
            continue
        if not os.path.isfile(prefix + ".index"):
            raise ConfigError(f"{name} {quoted}: the latest checkpoint, {prefix}, is missing "
                              f"(no {os.path.basename(prefix)}.index)")
        return prefix
    raise ConfigError(f"{name} {quoted} holds no checkpoint (no {CHECKPOINT_SUBDIR}/"
                      f"{STATE_FILE} or {STATE_FILE} file): train with a model_dir first")
