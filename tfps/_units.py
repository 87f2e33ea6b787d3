"""Sizes in bytes, as the command lines read and print them. Pure Python.

``--model-bytes`` and ``--ps-memory`` take a number of bytes with an optional decimal
(``kB``, ``MB``, ``GB``, ``TB``) or binary (``KiB``, ``MiB``, ``GiB``, ``TiB``) unit; reports
print sizes in binary units.

>>> parse_bytes("2GiB"), parse_bytes("500MB"), parse_bytes(123)
(2147483648, 500000000, 123)
>>> human_bytes(1536), human_bytes(3 << 30)
('1.5 KiB', '3.0 GiB')
"""

from __future__ import annotations

import re

from tfps.errors import ConfigError

__all__ = ["MAX_BYTES", "human_bytes", "parse_bytes"]

# More than any model: a bound that keeps the arithmetic finite.
MAX_BYTES = 1 << 50

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "ki": 1 << 10, "kib": 1 << 10,
          "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40,
          "tib": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_bytes(text: str | int, flag: str = "--model-bytes") -> int:
    """``"2GiB"`` -> 2147483648; ``"500MB"``, ``"1e9"``, ``123`` work too.

    Raises:
      ConfigError: naming `flag` and the text, when it is no size or is outside 1 B - 1 PiB.

    >>> parse_bytes("1.5KiB")
    1536
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value: float = text
    else:
        m = _SIZE.fullmatch(str(text))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise ConfigError(f"{flag}: cannot parse {str(text)[:40]!r} (expected bytes such as "
                              f"123456789, 500MB or 2GiB)")
        value = float(m.group(1)) * _UNITS[unit]
    if not 1 <= value <= MAX_BYTES:
        raise ConfigError(f"{flag}: must be between 1 byte and 1 PiB, got {str(text)[:40]!r}")
    return int(value)


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: binary units, one decimal (none for bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
