"""Which files a file input reads, in which format, and how many records each holds. Pure
Python: no TensorFlow (the TFRecord count itself is `tfps.data.records`).

Every check here runs on the chief before training, so that bad input ends the program with
one line naming the file (and the record) and exit code 2, before any closure runs:

* a pattern that matches no file, a path that is missing, a directory, or unreadable;
* an unknown format (the format is named, or read from the file names: ``.tfrecord``,
  ``.tfrec``, ``.tfrecords``, ``-NNNNN-of-NNNNN`` shards as tfds writes them; ``.csv``);
* a TFRecord file cut short or with a corrupt length header (`scan_tfrecord` walks its
  framing: 8-byte length, 4-byte length CRC, data, 4-byte data CRC).

>>> DataError("no file matches 'data/*.tfrecord'").args[0]
"no file matches 'data/*.tfrecord'"
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import struct
from collections.abc import Iterable, Sequence

from tfps.errors import ConfigError

__all__ = ["FORMATS", "DataError", "FileSet", "count_csv", "detect_format", "resolve",
           "scan_tfrecord"]

FORMATS = ("tfrecord", "csv")
_TFRECORD_NAME = re.compile(r"\.(tfrecords?|tfrec)(\.gz|\.zz)?$|-\d{5}-of-\d{5}$")
_CSV_NAME = re.compile(r"\.csv$")
# Bytes of a TFRecord's framing around its data: length (8), its CRC (4), the data's CRC (4).
_FRAMING = 16
# A glob that matches more files than this is a mistake (a home directory's '**').
_MAX_FILES = 1_000_000


class DataError(ConfigError):
    """Training data that cannot be read: a file, or a record of a file, named in one line.

    Attributes:
      path: the file (None when no file is concerned, e.g. a pattern that matches nothing).
      record: the record's index in the file (0-based), when one record is at fault.
    """

    def __init__(self, message: str, path: str | None = None, record: int | None = None):
        super().__init__(message)
        self.path, self.record = path, record


def _quote(text: str) -> str:
    return repr(text if len(text) <= 160 else text[:70] + "..." + text[-70:])


def resolve(files: str | Sequence[str]) -> list[str]:
    """The files of a glob pattern (sorted) or of a list (kept in its order, each one a glob
    too); every one a readable regular file.

    Raises:
      DataError: no file matches, or a path is missing, a directory, or unreadable.
    """
    patterns = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not patterns:
        raise DataError("no files given (an empty list)")
    found: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, (str, os.PathLike)):
            raise DataError(f"files: expected paths or glob patterns, got "
                            f"{type(pattern).__name__} {pattern!r:.60}")
        pattern = os.fspath(pattern)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not glob.has_magic(pattern) and not os.path.lexists(pattern):
            raise DataError(f"no file matches {_quote(pattern)}", path=pattern)
        found += matches
        if len(found) > _MAX_FILES:
            raise DataError(f"{_quote(pattern)} matches more than {_MAX_FILES:,} files")
    seen: set[str] = set()
    unique = [p for p in found if not (p in seen or seen.add(p))]
    for path in unique:
        _check_readable(path)
    return unique


def _check_readable(path: str) -> None:
    if os.path.isdir(path):
        raise DataError(f"file {_quote(path)}: is a directory, not a data file", path=path)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise DataError(f"file {_quote(path)}: cannot read it ({e.strerror or e})",
                        path=path) from None


def detect_format(paths: Sequence[str], format: str | None = None) -> str:
    """`format` if given (checked), else the one format every file name shows.

    Raises:
      DataError: an unknown format, or names that show none or two.
    """
    if format is not None:
        if format not in FORMATS:
            raise DataError(f"Argument `format` must be one of {', '.join(FORMATS)}. "
                            f"Received: format={format!r:.40}")
        return format
    kinds = {p: "tfrecord" if _TFRECORD_NAME.search(p) else "csv" if _CSV_NAME.search(p)
             else None for p in paths}
    if len(set(kinds.values())) == 1 and None not in kinds.values():
        return kinds[paths[0]]
    odd = next((p for p in paths if kinds[p] is None), None)
    if odd is None:
        other = next(p for p in paths if kinds[p] != kinds[paths[0]])
        raise DataError(f"the files mix formats: {_quote(paths[0])} is {kinds[paths[0]]}, "
                        f"{_quote(other)} is {kinds[other]}", path=other)
    raise DataError(f"file {_quote(odd)}: cannot tell its format from the names (.tfrecord, "
                    f".csv); pass format='tfrecord' or format='csv'", path=odd)


def scan_tfrecord(path: str, stop_at_offset: int | None = None) -> tuple[int, int | None, str]:
    """Walks a TFRecord file's framing (lengths only; TF checks the CRCs when it reads).

    Returns:
      ``(records, bad_record, reason)``: the records whose framing is whole, and the index of
      the first record that is not (None if the file is whole), with why. With
      `stop_at_offset`, stops at the record that starts at or contains that byte offset (what
      TF's "corrupted record at N" names) and returns its index as `bad_record`.
    """
    size = os.path.getsize(path)
    offset = index = 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                return index, index, f"cut short at byte {offset} (a partial length header)"
            (length,) = struct.unpack("<Q", header[:8])
            end = offset + length + _FRAMING
            if stop_at_offset is not None and offset <= stop_at_offset < end:
                return index, index, f"corrupt at byte {stop_at_offset}"
            if end > size:
                return index, index, (f"cut short at byte {offset} (the record's header says "
                                      f"{length} bytes, the file ends {size - offset - 12} "
                                      f"bytes later)")
            f.seek(end)
            offset, index = end, index + 1
    return index, None, ""


def count_csv(path: str, header: bool) -> int:
    """Lines of a CSV file (records: the header line excluded; a last line without a newline
    counts)."""
    lines = last = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            lines += chunk.count(b"\n")
            last = chunk[-1]
    if last and last != ord("\n"):
        lines += 1
    return max(0, lines - int(header))


@dataclasses.dataclass(frozen=True)
class FileSet:
    """Files and their record counts: the records of an epoch, in file order.

    Attributes:
      paths: the files.
      counts: records per file.
      format: ``"tfrecord"`` or ``"csv"``.
    """

    paths: tuple[str, ...]
    counts: tuple[int, ...]
    format: str

    @property
    def records(self) -> int:
        return sum(self.counts)

    def offsets(self) -> list[int]:
        """The global index of each file's first record (record ids: file order)."""
        out, total = [], 0
        for count in self.counts:
            out.append(total)
            total += count
        return out

    def where(self, record: int) -> tuple[str, int]:
        """``(path, index in the file)`` of global record `record`."""
        for path, first, count in zip(self.paths, self.offsets(), self.counts):
            if record < first + count:
                return path, record - first
        raise IndexError(record)


def nonempty(paths: Iterable[str], counts: Iterable[int]) -> tuple[list[str], list[int]]:
    """The files that hold records (an empty file is skipped, not an error)."""
    kept = [(p, c) for p, c in zip(paths, counts) if c > 0]
    return [p for p, _ in kept], [c for _, c in kept]
