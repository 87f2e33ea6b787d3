"""What tfps's command lines share (``tfps-launch``, ``python -m tfps.server``): one-line
errors, strict bounded number parsing, and the exit-2 convention. Pure Python.

Numbers: `int()` accepts ``'８０８０'`` (full-width digits), ``'8_080'``, ``' 8 '`` and ``'+8'``,
and `float()` accepts ``'1e308'``, ``'nan'`` and ``'inf'``; none of them is a port, a count or
a time a user means. The converters here take ASCII decimal digits only, within bounds that
fit a machine, and say which flag got what.

>>> int_in(1, 64)("4")
4
>>> int_in(1, 64)("1_0")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: expected an integer in [1, 64], got '1_0'
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from tfps.errors import TfpsError

__all__ = ["Parser", "UsageError", "arg_type", "exit_on_error", "int_in", "seconds_in"]

_INT = re.compile(r"[0-9]{1,12}")
_DECIMAL = re.compile(r"([0-9]{1,12}(\.[0-9]{0,9})?|\.[0-9]{1,9})")
# The longest bad value an error quotes.
_QUOTE = 40
# The longest error message printed (a safety net: messages quote short prefixes already).
_MAX_LINE = 1000


class UsageError(TfpsError):
    """Bad command line: printed as ``<prog>: error: ...``, exit 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`UsageError`) instead of usage + exit."""

    def error(self, message):
        raise UsageError(message)


def quote(text: str) -> str:
    """``repr(text)``, cut to a short prefix."""
    return repr(text if len(text) <= _QUOTE else text[:_QUOTE] + "...")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: ASCII digits only, ``low <= value <= high``."""
    def convert(text: str) -> int:
        if not isinstance(text, str) or not _INT.fullmatch(text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer in [{low}, {high}], got {quote(str(text))}")
        return int(text)
    return convert


def parse_seconds(text: str, high: float) -> float | None:
    """``"1.5"`` -> 1.5; None unless a plain decimal in ``(0, high]``."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if 0 < value <= high else None


def seconds_in(high: float) -> Callable[[str], float]:
    """An argparse type: a plain decimal number of seconds in ``(0, high]``."""
    def convert(text: str) -> float:
        value = parse_seconds(text, high)
        if value is None:
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds in (0, {high:g}], got {quote(str(text))}")
        return value
    return convert


def arg_type(expected: str, parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type calling ``parse(text)``: any `TfpsError` it raises becomes the one
    usage line ``expected <expected>, got '<text>'``."""
    def convert(text: str):
        try:
            return parse(text)
        except TfpsError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {quote(text)}"
                                             ) from None
    return convert


def exit_on_error(prog: str, error: BaseException) -> int:
    """Prints ``<prog>: error: <message>`` (one line) on stderr; returns exit code 2.

    The messages quote short prefixes of bad values already; the line is also cut at
    `_MAX_LINE` characters, so that no input can make it long.
    """
    message = " ".join(str(error).splitlines())
    if len(message) > _MAX_LINE:
        message = message[:_MAX_LINE - 3] + "..."
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return 2
