"""The arguments of `tfps.Trainer`, checked where they enter, before anything is built.
Pure: no TensorFlow (the strategy's type and the optimizer's conversion are checked by the
Trainer itself, with TensorFlow loaded).

Every argument has a kind in `ARGUMENTS`; `check` refuses a value of the wrong kind in one
`ConfigError` line naming the argument and the value, instead of a TypeError at the first
progress record (a string batch size) or Keras's "Unknown initializer" (a string learning
rate). A function must take the arguments the Trainer calls it with:

>>> check(batch_size="32")
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `batch_size` must be an integer in [1, 2147483647] or None. Received: batch_size='32'
>>> check(loss_fn=lambda batch: 0.0)
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `loss_fn` must be a function taking (model, batch). Received: loss_fn=<function <lambda> at ...> (it takes (batch))
"""  # noqa: E501 - a doctest shows an error line whole

from __future__ import annotations

import inspect
import os
from typing import Any

from tfps import validate
from tfps.errors import ConfigError
from tfps.schedules.config import check_learning_rate
from tfps.train.options import TrainerOptions

__all__ = ["ARGUMENTS", "check", "check_unchanged", "check_variables", "takes"]

# Largest batch size: examples per step are counted in int32 by tf.data.
_MAX_BATCH = 2**31 - 1
# Longest model_dir: Linux's PATH_MAX, less room for the files a run writes under it.
_MAX_DIR = 3800

# Every argument of `tfps.Trainer` and its kind (tests/integration/test_settings.py checks
# that this lists the Trainer's signature, so a new argument needs a kind, and hostile
# values of that kind are generated for it by tests/unit/test_api_hostile.py).
ARGUMENTS: dict[str, str] = {
    "strategy": "strategy",
    "model": "model",
    "loss_fn": "function(model, batch)",
    "optimizer": "optimizer",
    "dataset_fn": "function(input_context) or None",
    "data": "input or None",
    "learning_rate": "learning rate or None",
    "model_dir": "directory or None",
    "batch_size": "count or None",
    "eval_dataset_fn": "function(input_context) or None",
    "eval_fn": "function(model, batch) or None",
    "options": "options",
}
# The positional parameters each kind of function is called with.
_CALLS = {"function(model, batch)": ("model", "batch"),
          "function(input_context) or None": ("input_context",),
          "function(model, batch) or None": ("model", "batch")}


def takes(fn, names: tuple[str, ...]) -> bool | None:
    """Whether ``fn(*names)`` binds: True, False, or None when `fn` has no signature to read
    (a builtin, some C extensions): then it is not judged."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*names)
    except TypeError:
        return False
    return True


def _signature(fn) -> str:
    try:
        params = str(inspect.signature(fn)).split(" ->")[0]
    except (TypeError, ValueError):
        return ""
    return f" (it takes {params})"


def _function(name: str, value, params: tuple[str, ...], optional: bool) -> None:
    if value is None and optional:
        return
    what = f"a function taking ({', '.join(params)})" + (" or None" if optional else "")
    if isinstance(value, type) or not callable(value):
        raise validate.fail(name, value, what)
    if takes(value, params) is False:
        raise ConfigError(f"Argument `{name}` must be {what}. Received: "
                          f"{name}={validate.describe(value)}{_signature(value)}")


def _model(value) -> None:
    if hasattr(value, "trainable_variables"):
        return
    if not callable(value) or isinstance(value, (str, bytes)):
        raise validate.fail("model", value, "a model (with trainable_variables) or a "
                                            "function of no argument that builds one")
    if takes(value, ()) is False:
        raise ConfigError(f"Argument `model` must be a model or a function of no argument "
                          f"that builds one. Received: model={validate.describe(value)}"
                          f"{_signature(value)}")


def _directory(value) -> None:
    if value is None:
        return
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str) or not path or "\0" in path or len(path) > _MAX_DIR:
        raise validate.fail("model_dir", value, f"a non-empty path of at most {_MAX_DIR} "
                                                f"characters, or None")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise validate.fail("model_dir", value, "a directory (or a path to create), not a "
                                                "file")


def _optimizer(value) -> None:
    if isinstance(value, str):
        return  # the name is checked by tfps.train.optimizers.as_ps_optimizer
    if isinstance(value, type) or not hasattr(value, "get_config"):
        raise validate.fail("optimizer", value, "an optimizer instance or a name such as "
                                                "'adam'")


def check(**arguments: Any) -> None:
    """Checks the Trainer's `arguments` (any subset of `ARGUMENTS`, by name).

    Raises:
      ConfigError: one line naming the first bad argument and its value.
    """
    unknown = set(arguments) - set(ARGUMENTS)
    if unknown:
        raise ConfigError(f"Argument `{sorted(unknown)[0]}` is not an argument of the "
                          f"Trainer. Received: {sorted(unknown)[0]}")
    for name, value in arguments.items():
        kind = ARGUMENTS[name]
        if kind in _CALLS:
            _function(name, value, _CALLS[kind], optional=kind.endswith("or None"))
        elif kind == "model":
            _model(value)
        elif kind == "optimizer":
            _optimizer(value)
        elif kind == "learning rate or None":
            if value is not None:
                check_learning_rate(name, value)
        elif kind == "directory or None":
            _directory(value)
        elif kind == "count or None":
            validate.integer(name, value, low=1, high=_MAX_BATCH, allow_none=True)
        elif kind == "options" and not isinstance(value, TrainerOptions):
            what = "an instance, not the class" if value is TrainerOptions else "one"
            raise validate.fail(name, value, f"a TrainerOptions ({what})")
        # strategy and data: checked by the Trainer (with TensorFlow) and closure_input


def check_variables(model, optimizer, options: TrainerOptions) -> tuple[int, ...]:
    """Refuses what the Trainer's updates of the model's variables would not apply:

    * a variable's ``constraint`` (a tf_keras or Keras 3 ``kernel_constraint``, ...): tf_keras
      applies it after its own `apply_gradients` only, while the Trainer's updates run the
      optimizer's kernels (fused buffers, local copies), and a Keras 3 variable hands the
      Trainer its TF variable, which has no constraint;
    * the optimizer's ``clipnorm`` with ``fuse_dense``: it clips each gradient by its own
      norm, and a fused buffer's gradient is several variables' at once (measured: 3e-3 off
      the one-process reference after 12 steps). ``clipvalue`` and ``global_clipnorm`` do not
      depend on how variables are grouped, and are honoured.

    Returns:
      What `trainable` made of the model (its trainable variables), for `check_unchanged`.
    """
    clipnorm = optimizer.get_config().get("clipnorm")
    if clipnorm is not None and options.fuse_dense:
        raise ConfigError(
            f"Arguments `clipnorm` (of the optimizer) and `fuse_dense` (of TrainerOptions) "
            f"contradict each other: clipnorm clips each variable's gradient by its own norm, "
            f"and fused variables have one gradient; pass TrainerOptions(fuse_dense=False). "
            f"Received: clipnorm={validate.describe(clipnorm)}, fuse_dense=True")
    variables = list(model.trainable_variables)
    for var in variables:
        parts = [var, *getattr(var, "variables", ())] if hasattr(var, "variables") else [var]
        for part in parts:
            constraint = getattr(part, "constraint", None)
            if constraint is not None:
                name = getattr(var, "path", None) or getattr(var, "name", "?")
                raise ConfigError(
                    f"Argument `model` has a trainable variable with a constraint, which the "
                    f"Trainer's updates do not apply: {name} ({type(constraint).__name__}). "
                    f"Drop the constraint. "
                    f"Received: {validate.describe(name)}.constraint="
                    f"{validate.describe(constraint)}")
    return tuple(id(v) for v in variables)


def check_unchanged(model, trainable: tuple[int, ...]) -> None:
    """Refuses a model whose trainable variables changed since the Trainer was built (a
    layer's ``trainable`` set afterwards): the Trainer updates the variables it was built
    with, so the new setting would be silently ignored."""
    now = tuple(id(v) for v in model.trainable_variables)
    if now != trainable:
        raise ConfigError(
            f"Argument `model` must keep its trainable variables while a Trainer trains it: "
            f"{len(trainable)} when the Trainer was built, {len(now)} now (a layer's "
            f"`trainable` was set since). Build a new Trainer for the model. Received: "
            f"model={validate.describe(model)}")
