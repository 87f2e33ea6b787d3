"""Records of TFRecord and CSV files with TensorFlow: counted on the chief, read by range in
closures, and the record a parse function rejects found by bisection.

A *segment* is ``(path, first record, count)``: the records a unit reads from one file. TFRecord
segments read with ``TFRecordDataset.skip(first).take(count)`` (TF skips records by their length
headers, without reading or checking their data: ~55 ns a record, measured 2026-12-07); CSV
segments with ``TextLineDataset`` (the header line skipped too).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

from tfps import _tf
from tfps.data.sources import DataError, count_csv, scan_tfrecord

tf = _tf.require()

__all__ = ["RecordFormat", "count_records", "find_rejected", "output_spec", "tf_message"]

# Records per batch when the chief counts a file (one eager step each).
_COUNT_BATCH = 8192
# Bytes of a TFRecord's framing around its data (`tfps.data.sources.scan_tfrecord`).
_FRAMING = 16
# TF's DataLossError names the byte offset: "corrupted record at 12345".
_AT_OFFSET = re.compile(r"record at (\d+)")
# What TF wraps around an op's message: "{{function_node ...}} " and " [Op:Name] name: ".
_TF_WRAPPING = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$")


def tf_message(error) -> str:
    """The first line of a TF error's message, without TF's wrapping."""
    text = str(getattr(error, "message", error)).strip().splitlines()
    return _TF_WRAPPING.sub("", text[0] if text else "").strip()


class RecordFormat:
    """How the records of one format are read.

    Args:
      format: ``"tfrecord"`` or ``"csv"``.
      compression: ``None``, ``"GZIP"`` or ``"ZLIB"`` (TFRecord only).
      header: CSV files start with a header line (skipped).
    """

    def __init__(self, format: str, compression: str | None = None, header: bool = False):
        if compression not in (None, "", "GZIP", "ZLIB"):
            raise DataError(f"Argument `compression` must be None, 'GZIP' or 'ZLIB'. "
                            f"Received: compression={compression!r:.40}")
        if compression and format != "tfrecord":
            raise DataError(f"Argument `compression` is for TFRecord files only. Received: "
                            f"compression={compression!r}, format={format!r}")
        self.format, self.compression, self.header = format, compression or "", bool(header)

    def dataset(self, path, first=0, count=-1):
        """The records of one file from record `first` on (`count` of them; -1: all), as
        scalar strings. `path`, `first`, `count` may be tensors (inside a closure)."""
        if self.format == "tfrecord":
            records = tf.data.TFRecordDataset(path, compression_type=self.compression)
        else:
            records = tf.data.TextLineDataset(path).skip(int(self.header))
        return records.skip(first).take(count)

    def count(self, path: str) -> int:
        """Records in `path`; raises `DataError` naming the file (and the record) when the
        file cannot be read to its end."""
        if self.format == "csv":
            return count_csv(path, self.header)
        done = data = 0
        try:
            for batch in self.dataset(path).batch(_COUNT_BATCH):
                done += int(batch.shape[0])
                data += int(tf.reduce_sum(tf.strings.length(batch)))
        except tf.errors.OpError as e:
            raise self._unreadable(path, done, e) from None
        # TF ends a file at a partial length header without a word: the bytes must add up.
        if not self.compression and data + _FRAMING * done != os.path.getsize(path):
            _, bad, reason = scan_tfrecord(path)
            raise DataError(f"file {path!r}: record {done if bad is None else bad}: "
                            f"{reason or 'cut short'}", path=path, record=bad)
        return done

    def _unreadable(self, path: str, done: int, error) -> DataError:
        """The error for a file TF could not read past record `done` (± a batch)."""
        message = tf_message(error)
        if isinstance(error, tf.errors.DataLossError) and not self.compression:
            at = _AT_OFFSET.search(message)  # the record TF names by its byte offset
            _, bad, reason = scan_tfrecord(path, int(at.group(1)) if at else None)
            if bad is not None:
                if at:
                    reason = ("cut short (the file ends inside it)" if "truncated" in message
                              else "corrupt (its length or data fail their checksum)")
                return DataError(f"file {path!r}: record {bad}: {reason} ({message})",
                                 path=path, record=bad)
        # Find the record one at a time from the last batch that was read whole.
        index = done
        try:
            for _ in self.dataset(path, done):
                index += 1
        except tf.errors.OpError:
            pass
        return DataError(f"file {path!r}: record {index}: cannot be read ({message})",
                         path=path, record=index)

    def segment_records(self, path: str, first: int, count: int) -> list[bytes]:
        """The raw records of one segment, read eagerly on the chief (to find a bad one)."""
        return [r.numpy() for r in self.dataset(path, first, count)]


def count_records(fmt: RecordFormat, paths: Sequence[str]) -> list[int]:
    """Records in each file (`RecordFormat.count`)."""
    return [fmt.count(p) for p in paths]


def output_spec(parse_fn: Callable):
    """The `tf.TensorSpec` nest `parse_fn` returns for a vector of records (leading dimension
    None: a batch, or the short last batch of an epoch)."""
    traced = tf.function(parse_fn).get_concrete_function(tf.TensorSpec([None], tf.string))
    return tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype),
                                 traced.structured_outputs)


def _fails(parse_fn: Callable, records: list[bytes]) -> str | None:
    try:
        parse_fn(tf.constant(records, tf.string))
        return None
    except (tf.errors.OpError, ValueError, TypeError) as e:
        return tf_message(e)


def find_rejected(parse_fn: Callable, records: list[bytes]) -> tuple[int, str] | None:
    """``(index, error)`` of the first record `parse_fn` rejects, by bisection (a parse
    function of a batch fails when any of its records is bad), or None if it takes them all.
    A parse function that fails on every batch whatever its records (a bug, not a record)
    gives index 0."""
    error = _fails(parse_fn, records)
    if error is None:
        return None
    low, high = 0, len(records)  # the first bad record is in [low, high)
    while high - low > 1:
        mid = (low + high) // 2
        left = _fails(parse_fn, records[low:mid])
        if left is not None:
            high, error = mid, left
        else:
            low = mid
    return low, _fails(parse_fn, records[low:low + 1]) or error
