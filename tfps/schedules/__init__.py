"""Learning-rate schedules by name, with linear warm-up and the linear scaling rule.

`get` returns a `Schedule`: a pure function of the training step that both Keras optimizers
accept, tf_keras ones (what `Model.fit` under ParameterServerStrategy uses) and Keras 3 ones,
and that `tfps.Trainer` can call directly. The decays themselves are Keras's own
(``tf_keras.optimizers.schedules``); tfps adds only what Keras lacks: a linear warm-up in
front of any schedule, the inverse-square-root decay, a constant, and scaling by the number of
workers. A learning rate computed from the step costs no RPC; one kept in a variable on a ps
task becomes a hotspot (docs/tensorflow-notes.md, "Optimizer hyperparameters as variables").

* `config` (pure Python): every schedule's arguments and a learning rate, checked;
* `schedule` (TensorFlow): `Schedule`, `get`, and `check_run`, which the Trainer calls with
  each run's steps (a growing schedule that passes infinity within the run is refused).

Importing this package does not import TensorFlow: `Schedule`, `get` and `check_run` load it
on first use.

>>> from tfps import schedules
>>> lr = schedules.get("cosine", initial_learning_rate=0.1, decay_steps=1000, warmup_steps=100)
>>> [round(float(lr(s)), 4) for s in (0, 50, 100, 600, 1100, 5000)]
[0.0, 0.05, 0.1, 0.05, 0.0, 0.0]
>>> schedules.get(lr.get_config()).get_config() == lr.get_config()
True
"""

from tfps.schedules.config import MAX_BOUNDARIES, MAX_RATE, MAX_STEPS, NAMES, check_learning_rate

_LAZY = {name: "tfps.schedules.schedule" for name in ("Schedule", "check_run", "get")}
# Pickles made when this package was one module name `tfps.schedules._from_config`.
_PICKLED = {"_from_config": "tfps.schedules.schedule"}

__all__ = ["MAX_BOUNDARIES", "MAX_RATE", "MAX_STEPS", "NAMES", "check_learning_rate", *_LAZY]


def __getattr__(name: str):
    import importlib

    if name in _LAZY or name in _PICKLED:
        return getattr(importlib.import_module({**_LAZY, **_PICKLED}[name]), name)
    raise AttributeError(f"module 'tfps.schedules' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
