"""The chief's ledger of an epoch's records: which unit goes to which closure, which came back.
Pure Python and NumPy: no TensorFlow.

An epoch is every record of the files once, in an order fixed by the epoch: the files in a
permutation of ``(seed, epoch)`` (or as given, without shuffling), each file's records in file
order. A record's *position* is its place in that order; its *id* is its place in the files as
given (the first file's records first). The chief hands out *units*: the next positions of the
epoch, as many as one closure trains on (``steps × batch_size``; fewer at the epoch's end, a
unit never spans two epochs), named by file and record range (`Unit.segments`). A closure that
TF's coordinator re-runs after a worker died gets the same unit, so it reads the same records.

When a closure's result arrives, its unit is *done*: the ledger adds the unit's positions to
the epoch's done intervals, once per result. `Ledger.visitation` counts, per epoch, the records
seen once, more than once and never (of the epochs begun). `Ledger.state` is what a checkpoint
keeps; a unit handed out but not done when the state was taken is handed out again after a
restore (the loop saves with no closure in flight, so normally there is none).

>>> ledger = Ledger([3, 2], batch_size=2)
>>> unit = ledger.next_unit(max_records=4)
>>> unit.epoch, unit.start, unit.records, unit.segments
(0, 0, 4, ((0, 0, 3), (1, 0, 1)))
>>> ledger.finish(unit); ledger.next_unit(4).records     # the epoch's last record
1
>>> ledger.steps_per_epoch
3
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from collections.abc import Sequence

import numpy as np

__all__ = ["Ledger", "Unit", "Visitation"]

# The state's format; a checkpoint of another version is refused with one line.
_STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Unit:
    """One closure's records.

    Attributes:
      epoch: the epoch it belongs to.
      start: its first position in the epoch.
      records: how many records (positions ``start .. start + records - 1``).
      segments: ``(file index, first record in the file, count)`` per file it covers.
    """

    epoch: int
    start: int
    records: int
    segments: tuple[tuple[int, int, int], ...]

    @property
    def end(self) -> int:
        return self.start + self.records


@dataclasses.dataclass(frozen=True)
class Visitation:
    """Records seen once, more than once, and never, summed over the epochs counted."""

    epochs: int
    records_per_epoch: int
    seen_once: int
    seen_more: int
    missing: int


class Ledger:
    """The epochs' order, the units handed out, the units done (see the module docstring).

    Args:
      counts: records per file, in the files' order (a file of 0 records is allowed).
      batch_size: records per step.
      shuffle: permute the files' order at every epoch (by ``(seed, epoch)``).
      seed: the permutations' seed.
    """

    def __init__(self, counts: Sequence[int], batch_size: int, *, shuffle: bool = False,
                 seed: int = 0):
        self.counts = np.asarray(counts, np.int64)
        if self.counts.ndim != 1 or not self.counts.size or (self.counts < 0).any():
            raise ValueError(f"counts must be record counts per file. Received: {counts!r:.80}")
        self.records = int(self.counts.sum())
        if self.records <= 0:
            raise ValueError("the files hold no record")
        self.batch_size = int(batch_size)
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.first_ids = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.epoch = 0
        self.position = 0
        self._redo: list[tuple[int, int, int]] = []  # (epoch, start, end) handed out again
        self._in_flight: dict[tuple[int, int], Unit] = {}
        self._done: dict[int, list[list[int]]] = {}  # epoch -> sorted [start, end) intervals
        self._orders: dict[int, np.ndarray] = {}

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch: every record once, the last batch short when it must be."""
        return -(-self.records // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The files' indices in the order of `epoch`."""
        if epoch not in self._orders:
            n = self.counts.size
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)
                            if self.shuffle else np.arange(n)}
        return self._orders[epoch]

    # ------------------------------------------------------------------------ handing out
    def next_unit(self, max_records: int) -> Unit:
        """The next unit: at most `max_records` records, never past the epoch's end."""
        if max_records <= 0:
            raise ValueError(f"max_records must be positive. Received: {max_records}")
        if self._redo:
            epoch, start, end = self._redo[0]
            take = min(end - start, max_records)
            if start + take == end:
                self._redo.pop(0)
            else:
                self._redo[0] = (epoch, start + take, end)
        else:
            if self.position >= self.records:
                self.epoch, self.position = self.epoch + 1, 0
            epoch, start = self.epoch, self.position
            take = min(max_records, self.records - start)
            self.position += take
        unit = Unit(epoch, start, take, self.segments(epoch, start, take))
        self._in_flight[(epoch, start)] = unit
        return unit

    def segments(self, epoch: int, start: int, records: int) -> tuple:
        """``(file index, first record, count)`` of positions ``start .. start+records-1``."""
        order = self.order(epoch)
        ends = np.cumsum(self.counts[order])
        j = int(np.searchsorted(ends, start, side="right"))
        out, left, pos = [], records, start
        while left > 0:
            file = int(order[j])
            first = pos - (int(ends[j]) - int(self.counts[file]))
            take = min(left, int(self.counts[file]) - first)
            if take > 0:
                out.append((file, first, take))
            left, pos, j = left - take, pos + take, j + 1
        return tuple(out)

    def finish(self, unit: Unit) -> None:
        """`unit`'s closure finished: its records count once more."""
        self._in_flight.pop((unit.epoch, unit.start), None)
        intervals = self._done.setdefault(unit.epoch, [])
        i = bisect.bisect_left(intervals, [unit.start, unit.end])
        intervals.insert(i, [unit.start, unit.end])
        # Merge only neighbours that touch without overlapping: an overlap is a record seen
        # twice, and must stay visible to `visitation`.
        for k in (i, i - 1):
            if 0 <= k < len(intervals) - 1 and intervals[k][1] == intervals[k + 1][0]:
                intervals[k][1] = intervals.pop(k + 1)[1]

    @property
    def in_flight(self) -> list[Unit]:
        """Units handed out whose closure has not finished."""
        return list(self._in_flight.values())

    # ------------------------------------------------------------------------ counting
    def counts_by_id(self, epoch: int) -> np.ndarray:
        """How often each record (by id) was seen in `epoch` (int32, one per record)."""
        diff = np.zeros(self.records + 1, np.int64)
        for start, end in self._done.get(epoch, ()):
            for file, first, count in self.segments(epoch, start, end - start):
                first_id = int(self.first_ids[file]) + first
                diff[first_id] += 1
                diff[first_id + count] -= 1
        return np.cumsum(diff[:-1]).astype(np.int32)

    def visitation(self, epochs: int | None = None) -> Visitation:
        """Seen once / more / never over epochs ``0 .. epochs-1`` (default: every epoch begun
        or done)."""
        if epochs is None:
            epochs = max([e + 1 for e in self._done] + [self.epoch + bool(self.position)])
        once = more = missing = 0
        for epoch in range(epochs):
            seen = self.counts_by_id(epoch)
            once += int((seen == 1).sum())
            more += int((seen > 1).sum())
            missing += int((seen == 0).sum())
        return Visitation(epochs, self.records, once, more, missing)

    # ------------------------------------------------------------------------ checkpoints
    def state(self) -> str:
        """The ledger as JSON: the cursor, the done intervals, the units in flight."""
        pending = sorted([u.epoch, u.start, u.end] for u in self._in_flight.values())
        return json.dumps({
            "version": _STATE_VERSION, "records": self.records, "counts_hash": self._hash(),
            "epoch": self.epoch, "position": self.position,
            "redo": [list(r) for r in self._redo] + pending,
            "done": {str(e): iv for e, iv in sorted(self._done.items())}})

    def restore(self, text: str) -> None:
        """Continues from a `state`: units that were in flight are handed out first.

        Raises:
          ValueError: the state is of other files (their record counts differ) or malformed.
        """
        try:
            state = json.loads(text)
            if state["version"] != _STATE_VERSION:
                raise ValueError(f"format version {state['version']}")
            if state["records"] != self.records or state["counts_hash"] != self._hash():
                raise ValueError(f"it was written for {state['records']:,} records in files "
                                 f"of other sizes; these hold {self.records:,}")
            self.epoch, self.position = int(state["epoch"]), int(state["position"])
            self._redo = [tuple(int(x) for x in r) for r in state["redo"]]
            self._done = {int(e): [[int(a), int(b)] for a, b in iv]
                          for e, iv in state["done"].items()}
            self._in_flight = {}
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed ledger state ({e})") from None

    def _hash(self) -> str:
        import hashlib
        return hashlib.sha256(self.counts.tobytes()).hexdigest()[:16]
