"""Argument checks shared by every tfps API: one place, one message style.

Every check raises `tfps.errors.ConfigError` naming the argument and the value received, in the
house style ``Argument `num_ps` must be an integer >= 1. Received: num_ps=0``. Values are
quoted with `describe`, which cuts long reprs so that an error stays one short line whatever
the caller passed.

>>> integer("num_ps", 2, low=1)
2
>>> integer("num_ps", 0, low=1)
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `num_ps` must be an integer >= 1. Received: num_ps=0
>>> boolean("staleness_aware", "no")
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `staleness_aware` must be True or False. Received: staleness_aware='no'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from tfps.errors import ConfigError

__all__ = ["boolean", "choice", "count", "describe", "fail", "integer", "number"]

# Most tasks (or GPUs, restarts, nodes) of one kind any cluster or manifest asks for.
MAX_COUNT = 100_000
# Longest repr quoted in an error message: a hostile value must not make the message huge.
_MAX_REPR = 80
# A list or tuple of at most this many short scalars is shown as itself, not summarised.
_SHOWN_ITEMS = 8


def describe(value: Any, limit: int = _MAX_REPR) -> str:
    """``repr(value)``, cut to `limit` characters (``...`` marks a cut).

    Never formats more of a huge value than it shows: containers are summarised by type and
    length, so a 50 MB string or a deeply nested list costs nothing to describe.
    """
    if isinstance(value, (str, bytes)):
        text = repr(value[:limit + 1])
    elif isinstance(value, (list, tuple)) and len(value) <= _SHOWN_ITEMS and all(
            _plain(v, limit) for v in value):
        text = repr(value)  # a few plain numbers or words: cheap, and clearer shown
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        text = f"<{type(value).__name__} of {len(value)}>"
    else:
        try:
            text = repr(value)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _plain(value: Any, limit: int) -> bool:
    """A scalar whose repr is short and cheap: shown as itself inside a short list."""
    if type(value) in (bool, float, type(None)):
        return True
    if type(value) is int:
        return -10**20 < value < 10**20
    return type(value) in (str, bytes) and len(value) <= limit


def fail(name: str, value: Any, requirement: str) -> ConfigError:
    """The house error: ``Argument `name` must be <requirement>. Received: name=<value>``."""
    return ConfigError(f"Argument `{name}` must be {requirement}. "
                       f"Received: {name}={describe(value)}")


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None,
            allow_none: bool = False) -> int | None:
    """`value` if it is an int (not a bool) in ``[low, high]``; None passes with `allow_none`."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and ((low is not None and value < low) or (high is not None and value > high)):
        ok = False
    if not ok:
        raise fail(name, value, _range("an integer", low, high) +
                   (" or None" if allow_none else ""))
    return int(value)


def count(name: str, value: Any, low: int = 1) -> int:
    """`value` if it is an integer count in ``[low, MAX_COUNT]``."""
    return integer(name, value, low=low, high=MAX_COUNT)


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, allow_none: bool = False) -> float | None:
    """`value` as a float if it is a finite real number in range (``low_open``: ``> low``)."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and _finite(value)
    if ok and low is not None and (value <= low if low_open else value < low):
        ok = False
    if ok and high is not None and value > high:
        ok = False
    if not ok:
        lower = None if low is None else (f"> {low}" if low_open else f">= {low}")
        parts = [p for p in (lower, None if high is None else f"<= {high}") if p]
        raise fail(name, value, "a finite number" + (" " + " and ".join(parts) if parts
                                                     else "") + (" or None" if allow_none
                                                                 else ""))
    return float(value)


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400)
        return False


def boolean(name: str, value: Any) -> bool:
    """`value` if it is exactly True or False (``"no"`` is not False)."""
    if not isinstance(value, bool):
        raise fail(name, value, "True or False")
    return value


def choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """`value` if it is one of `choices`."""
    choices = tuple(choices)
    if not any(value == c and type(value) is type(c) for c in choices):
        raise fail(name, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def _range(kind: str, low, high) -> str:
    if low is not None and high is not None:
        return f"{kind} in [{low}, {high}]"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind
