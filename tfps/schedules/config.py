"""The arguments of every learning-rate schedule, and of a learning rate, checked without
TensorFlow. Pure: `tfps.schedules.Schedule` calls `check`; `tfps.Trainer` and the optimizer
conversion call `check_learning_rate`.

Every bad value is one `tfps.errors.ConfigError` line naming the argument and the value:

>>> check("cosine", {"initial_learning_rate": 0.1, "decay_steps": 100})["alpha"]
0.0
>>> check("cosine", {"initial_learning_rate": 0.1, "decay_steps": 100, "staircase": True})
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `staircase` is not accepted by schedule 'cosine' (it accepts initial_learning_rate, decay_steps, alpha, warmup_steps, num_workers). Received: staircase=True
>>> check_learning_rate("learning_rate", "0.1")
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `learning_rate` must be a finite number in [0, 1e+06] or a schedule. Received: learning_rate='0.1'
"""  # noqa: E501 - a doctest shows an error line whole

from __future__ import annotations

import math
import numbers
from typing import Any

from tfps import validate
from tfps.errors import ConfigError

__all__ = ["MAX_BOUNDARIES", "MAX_RATE", "MAX_STEPS", "NAMES", "SPECS", "COMMON", "check",
           "check_learning_rate", "first_step_over"]

# name -> (required arguments, optional arguments with their defaults). The defaults are those
# of the Keras schedule of the same kind, so `get_config` is complete and explicit.
SPECS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("initial_learning_rate",), {}),
    "exponential": (("initial_learning_rate", "decay_steps", "decay_rate"),
                    {"staircase": False}),
    "piecewise": (("boundaries", "values"), {}),
    "polynomial": (("initial_learning_rate", "decay_steps"),
                   {"end_learning_rate": 0.0001, "power": 1.0, "cycle": False}),
    "cosine": (("initial_learning_rate", "decay_steps"), {"alpha": 0.0}),
    # decay_steps=None means "the same as warmup_steps" (the Transformer schedule).
    "inverse_sqrt": (("initial_learning_rate",), {"decay_steps": None}),
}
NAMES = tuple(SPECS)
# Arguments every schedule accepts.
COMMON = {"warmup_steps": 0, "num_workers": 1}

# Step arguments (warmup_steps, decay_steps, boundaries) become int32 or float32 tensors in
# Keras's schedules: 2**70 passes a Python check and fails at the first call.
MAX_STEPS = 2**31 - 1
# Learning rates and the factors of a decay: any larger value is a typo, and the largest
# rate times the most workers (validate.MAX_COUNT) stays far inside float32.
MAX_RATE = 1e6
# Boundaries of one piecewise schedule: a schedule is a handful of phases; 10 000 is already
# far more than any schedule needs (looked up with one search, not one op per boundary).
MAX_BOUNDARIES = 10_000


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    try:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value))
    except OverflowError:  # an int too large for a float
        return False


def _is_step(value) -> bool:
    return _is_int(value) and 0 <= value <= MAX_STEPS


def check_learning_rate(name: str, value) -> Any:
    """`value` if it is a learning rate: a finite number in ``[0, MAX_RATE]`` (a Python or
    NumPy number, or a scalar tensor or variable, read once), or a schedule (any callable
    object: a `tfps.schedules.Schedule`, a Keras schedule, a function of the step).

    Refused: strings (``"0.1"``), booleans, NaN, infinities, negative or huge numbers, a
    schedule *class* instead of an instance, and anything else.
    """
    requirement = f"a finite number in [0, {MAX_RATE:g}] or a schedule"
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise validate.fail(name, value, requirement)
    if isinstance(value, type):
        raise validate.fail(name, value, requirement + " (an instance, not a class)")
    if isinstance(value, numbers.Real):
        number = value
    elif callable(value):
        return value
    elif hasattr(value, "numpy") and hasattr(value, "dtype"):  # a tensor or a variable
        try:
            number = float(value.numpy())
        except (TypeError, ValueError):
            raise validate.fail(name, value, requirement + " (a scalar)") from None
    else:
        raise validate.fail(name, value, requirement)
    if not _is_number(number) or not 0 <= number <= MAX_RATE:
        raise validate.fail(name, value, requirement)
    return value


def check(kind: str, config: dict) -> dict:
    """Validates and normalises the arguments of schedule `kind`; returns a complete config."""
    if not isinstance(kind, str) or kind not in SPECS:
        raise validate.fail("schedule", kind, f"one of {', '.join(NAMES)}")
    required, optional = SPECS[kind]
    accepted = (*required, *optional, *COMMON)
    for key in config:
        if key not in accepted:
            shown = str(key)[:40]  # kwargs keys are strings; a config dict was checked
            raise ConfigError(
                f"Argument `{shown}` is not accepted by schedule {kind!r} (it accepts "
                f"{', '.join(accepted)}). Received: {shown}={validate.describe(config[key])}")
    for key in required:
        if key not in config:
            raise ConfigError(f"Argument `{key}` is required by schedule {kind!r}. "
                              f"Received: nothing")
    out = {**optional, **COMMON, **config}

    def integer(key, low, high, why):
        value = out[key]
        if not _is_int(value) or value < low:
            raise validate.fail(key, value, "a positive integer" if low else "an integer >= 0")
        if value > high:
            raise validate.fail(key, value, f"at most {high} ({why})")
        out[key] = int(value)

    def steps(key, low=0):
        integer(key, low, MAX_STEPS, "steps become int32 and float32 tensors")

    def number(key, value, requirement, ok):
        if not _is_number(value) or not ok(value):
            raise validate.fail(key, value, requirement)
        if value > MAX_RATE:
            raise validate.fail(key, value, f"at most {MAX_RATE:g}")
        return float(value)

    def rate(key, value=None):
        return number(key, out[key] if value is None else value, "a finite number >= 0",
                      lambda v: v >= 0)

    def factor(key):  # decay_rate, power
        out[key] = number(key, out[key], "a finite number > 0", lambda v: v > 0)

    steps("warmup_steps")
    integer("num_workers", 1, validate.MAX_COUNT, "workers of one job")
    if kind == "piecewise":
        boundaries, values = out["boundaries"], out["values"]
        if not isinstance(boundaries, (list, tuple)) or not 1 <= len(boundaries) <= \
                MAX_BOUNDARIES or not all(_is_step(b) for b in boundaries):
            raise validate.fail("boundaries", boundaries,
                                f"a list of 1 to {MAX_BOUNDARIES} integers in [0, "
                                f"{MAX_STEPS}] (for one value, use 'constant')")
        if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
            raise validate.fail("boundaries", boundaries, "strictly increasing")
        if not isinstance(values, (list, tuple)) or len(values) != len(boundaries) + 1:
            raise ConfigError(
                f"Argument `values` must have one more element than `boundaries` "
                f"({len(boundaries)} boundaries need {len(boundaries) + 1} values). "
                f"Received: values={validate.describe(values)}, "
                f"boundaries={validate.describe(boundaries)}")
        out["boundaries"] = [int(b) for b in boundaries]
        out["values"] = [rate("values", v) for v in values]
        return out
    out["initial_learning_rate"] = rate("initial_learning_rate")
    if kind == "inverse_sqrt" and out["decay_steps"] is None:
        if not out["warmup_steps"]:
            raise ConfigError("Argument `decay_steps` is required by schedule 'inverse_sqrt' "
                              "when warmup_steps=0. Received: decay_steps=None")
        out["decay_steps"] = out["warmup_steps"]
    if "decay_steps" in out:
        steps("decay_steps", low=1)
    if kind == "exponential":
        factor("decay_rate")
    if kind == "polynomial":
        out["end_learning_rate"] = rate("end_learning_rate")
        factor("power")
    if kind == "cosine":
        if not _is_number(out["alpha"]) or not 0 <= out["alpha"] <= 1:
            raise validate.fail("alpha", out["alpha"], "a number in [0, 1]")
        out["alpha"] = float(out["alpha"])
    for flag in ("staircase", "cycle"):
        if flag in out:
            validate.boolean(flag, out[flag])
    return out


def first_step_over(kind: str, config: dict, limit: float) -> int | None:
    """The first step at which schedule `kind` (a config from `check`) exceeds `limit`, or
    None if it never does.

    Only a growing exponential (``decay_rate > 1``) can: every other kind stays at most its
    largest argument times ``num_workers``, which `check` bounds. Computed in log space, so
    a schedule that overflows float32 is found without computing it.
    """
    if kind != "exponential" or config["decay_rate"] <= 1.0:
        return None
    initial = config["initial_learning_rate"] * config["num_workers"]
    if initial > limit:
        return 0
    if initial == 0.0:
        return None
    # initial * rate ** (s / d) > limit  <=>  s > d * log(limit / initial) / log(rate)
    s = config["decay_steps"] * math.log(limit / initial) / math.log(config["decay_rate"])
    after = math.floor(s) + 1
    if config["staircase"]:  # the exponent is floor(s / d): it grows every d steps
        after = (math.floor(s / config["decay_steps"]) + 1) * config["decay_steps"]
    return config["warmup_steps"] + after
