"""Checkpoints: where a run's live, which is the latest, and how a model's are written and read.

The one home of checkpoint knowledge for `tfps.train`, `tfps.keras` and `tfps.export`:

* `layout` (pure Python): the ``checkpoints/`` and ``backup/`` folders of a run's
  ``model_dir``, TF's ``checkpoint`` state file and the latest checkpoint it names, and the
  rule that tells a Trainer's checkpoint (its model under ``model/``) from Keras weights;
* `manager` (TensorFlow): `Checkpoints`, the save/restore cadence of a model on ps tasks;
  `trackable` and `Keras3Variables`, what a checkpoint tracks of a Keras 3 model;
  `restore_model`, a checkpoint read back into a model built elsewhere.

`import tfps.checkpoints` does not import TensorFlow: the manager's names load on first use.

>>> from tfps import checkpoints
>>> checkpoints.checkpoint_dir("/tmp/run"), checkpoints.STATE_FILE
('/tmp/run/checkpoints', 'checkpoint')
"""

from tfps.checkpoints.layout import (
    BACKUP_SUBDIR,
    CHECKPOINT_SUBDIR,
    MODEL_KEY,
    STATE_FILE,
    backup_dir,
    checkpoint_dir,
    checkpoint_number,
    is_trainer_checkpoint,
    latest_checkpoint,
    read_state,
)

# name -> module that defines it, loaded on first attribute access (PEP 562).
_LAZY = {name: "tfps.checkpoints.manager"
         for name in ("Checkpoints", "Keras3Variables", "restore_model", "trackable")}

__all__ = ["BACKUP_SUBDIR", "CHECKPOINT_SUBDIR", "MODEL_KEY", "STATE_FILE", "backup_dir",
           "checkpoint_dir", "checkpoint_number", "is_trainer_checkpoint", "latest_checkpoint",
           "read_state", *_LAZY]


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfps.checkpoints' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
