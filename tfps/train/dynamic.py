"""The Trainer's side of `DynamicEmbedding` layers (`tfps.layers`): their tables, their
step scope, their eviction cadence and what is reported about them.

* **Set-up** (`DynamicTables`, on the chief): finds the layers' tables in the model, refuses
  the Trainer modes they cannot run in (a `ConfigError` naming the option), and creates each
  table's shards on the ps tasks (one per ps) with the optimizer's update rule for rows
  (`tfps.train.optim_math`: SGD, momentum, Adagrad, Adam) and its slots' initial values.
* **Each step** (`scope`, inside the closure): the lookups count, admit and record their rows
  on the step's tape (`tfps.layers.gradients`); after the gradient, the touched rows are
  updated on their ps. The rows' clock is the optimizer's update count, read once per step
  (``ReadVariableOp`` on its handle: the closure's read cache must not serve an old count).
* **Between closures** (`maintain`, on the chief): every `evict_every` steps the loop waits for
  the closures in flight, as for a checkpoint, and each due table evicts (TTL, then the cap)
  on its ps tasks, under each shard's lock, at the first closure boundary at or after each
  multiple of the interval. Every table also evicts before each checkpoint and at the end of
  `train` (`evict`): a checkpoint or an export never holds rows over the cap or past the TTL.
* **Reports**: ``rows``, ``admitted`` and ``evicted`` in each ``train |`` record (admitted =
  rows now - rows at the last record + evicted since: every row is admitted once and leaves
  only by eviction), per shard in TensorBoard (``dynamic/<layer>/rows/shard_<i>``, ...), and a
  per-shard table in `describe`.
"""

from __future__ import annotations

import contextlib
import logging
import os

import numpy as np

from tfps import _tf
from tfps.errors import ConfigError
from tfps.layers import gradients
from tfps.layers.dynamic_embedding import tables_of
from tfps.train import optim_math
from tfps.train.options import TrainerOptions
from tfps.train.progress import summary_writer

tf = _tf.require()

__all__ = ["DynamicTables"]

log = logging.getLogger(__name__)

# Gradient transformations of tf_keras optimizers the row updates would not apply.
_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


class DynamicTables:
    """Every `DynamicEmbedding` table of one Trainer's model (maybe none: then inactive).

    Args:
      strategy: the ParameterServerStrategy (one shard per ps task).
      model: the Trainer's model.
      optimizer: its tf_keras legacy optimizer: the rows' update rule.
      options: the Trainer's options (a mode that does not read and update the model at
        every step is refused, as is staleness scaling).
      num_workers: workers in the cluster.
      model_dir: where per-shard TensorBoard scalars go (``train/``), or None.
    """

    def __init__(self, *, strategy, model, optimizer, options: TrainerOptions,
                 num_workers: int = 1, model_dir: str | None = None):
        self.tables = tables_of(model)
        self._optimizer, self._model_dir = optimizer, model_dir
        self._warned = False  # about tables the loss does not train
        self._last_evicted: dict[int, int] = {}   # table id -> step of its last eviction
        self._evicted = {id(t): np.zeros(0, np.int64) for t in self.tables}  # since record
        self._evicted_total = {id(t): 0 for t in self.tables}
        self._rows_at_record: dict[int, np.ndarray] = {}
        self._frozen = {id(t): t.frozen for t in self.tables}  # `trainable` as built
        if not self.tables:
            return
        names = ", ".join(repr(t.name) for t in self.tables)
        if not options.mode.reads_every_step:
            raise ConfigError(
                f"Argument `mode` must read and update the model at every step (PerStep) for "
                f"a model with DynamicEmbedding layers ({names}): their rows are read and "
                f"updated on the ps at every step. Received: mode={options.mode!r}")
        if options.staleness_for(num_workers):
            raise ConfigError(
                f"Argument `staleness_aware` must be False for a model with DynamicEmbedding "
                f"layers ({names}): their row updates are not scaled. Received: "
                f"staleness_aware={options.staleness_aware!r}")
        config = optimizer.get_config()
        for option in _CLIPPING:
            if config.get(option) is not None:
                raise ConfigError(
                    f"Argument `optimizer` must not clip gradients for a model with "
                    f"DynamicEmbedding layers ({names}): their row updates would not be "
                    f"clipped. Received: {option}={config[option]!r}")
        rule = optim_math.rule_for(optimizer, purpose="DynamicEmbedding rows")
        slot_inits = optim_math.initial_slots(optimizer, rule)
        devices = [f"/job:ps/replica:0/task:{i}/device:CPU:0"
                   for i in range(_tf.num_ps(strategy))]
        with strategy.scope():
            for table in self.tables:
                table.create(devices, rule, slot_inits)
        for table in self.tables:
            self._evicted[id(table)] = np.zeros(table.num_shards, np.int64)

    @property
    def active(self) -> bool:
        return bool(self.tables)

    @property
    def interval(self) -> int | None:
        """Steps between maintenance calls (the shortest eviction interval), or None."""
        found = [t.config.eviction_interval for t in self.tables if t.config.evicts]
        return min(found) if found else None

    # ------------------------------------------------------------------ in a closure
    @contextlib.contextmanager
    def scope(self, tape):
        """The step scope of the lookups (yields their `RowGradients`, or None if inactive).
        After ``tape.gradient(loss, recorder.sources)``, call ``recorder.push(grads)``."""
        if not self.tables:
            yield None
            return
        iterations = self._optimizer.iterations
        step = tf.raw_ops.ReadVariableOp(resource=iterations.handle, dtype=iterations.dtype)
        with gradients.watch_rows(tape, step) as recorder:
            yield recorder
        missing = [t.name for t in self.tables if t not in recorder.tables and not t.frozen]
        if missing and not self._warned:
            self._warned = True
            log.warning("tfps: the loss did not call DynamicEmbedding %s with training=True: "
                        "those tables get no rows and no updates", ", ".join(missing))

    # ------------------------------------------------------------------ on the chief
    def maintain(self, step: int) -> None:
        """Evicts every table whose interval has a multiple in (its last eviction, `step`]
        (called with no closure in flight)."""
        self._evict(step, due_only=True)

    def evict(self, step: int) -> None:
        """Evicts every table that evicts, now (before a checkpoint and at the end of
        `train`, with no closure in flight): what is saved or exported holds no row over a
        cap or past a TTL."""
        self._evict(step, due_only=False)

    def _evict(self, step: int, due_only: bool) -> None:
        now = None
        for table in self.tables:
            every = table.config.eviction_interval
            if every is None or table.frozen:  # a frozen table is read only (docs/settings.md)
                continue
            last = self._last_evicted.get(id(table), 0)
            if due_only and step // every <= last // every:
                continue
            if now is None:  # the rows' clock: updates applied so far
                now = int(self._optimizer.iterations.numpy())
            evicted = table.evict(now)[:, 0]
            self._evicted[id(table)] = self._evicted[id(table)] + evicted
            self._evicted_total[id(table)] += int(evicted.sum())
            self._last_evicted[id(table)] = step

    def start(self, step: int) -> None:
        """At the start of `train`: the reference for the first record's admissions, and the
        eviction schedule continues from `step` (a resumed run evicts where an uninterrupted
        one would)."""
        for table in self.tables:
            if table.frozen != self._frozen[id(table)]:  # traced as it was: not honoured
                raise ConfigError(
                    f"Argument `trainable` of DynamicEmbedding {table.name!r} must stay as it "
                    f"was when the Trainer was built ({not self._frozen[id(table)]}): build a "
                    f"new Trainer for the model. Received: trainable={not table.frozen}")
            self._rows_at_record[id(table)] = table.sizes()[:, 0]
            self._last_evicted.setdefault(id(table), step)

    def record_values(self, step: int) -> dict:
        """``rows``, ``admitted``, ``evicted`` (summed over the tables; since the last record)
        for the ``train |`` record; per-shard values go to TensorBoard."""
        if not self.tables:
            return {}
        totals = {"rows": 0, "admitted": 0, "evicted": 0}
        scalars = {}
        for table in self.tables:
            sizes = table.sizes()
            rows = sizes[:, 0]
            evicted = self._evicted[id(table)]
            before = self._rows_at_record.get(id(table), np.zeros_like(rows))
            admitted = rows - before + evicted
            for s in range(table.num_shards):
                for what, value in (("rows", rows[s]), ("waiting", sizes[s, 1] - rows[s]),
                                    ("bytes", table.shard_bytes(sizes)[s]),
                                    ("admitted", admitted[s]), ("evicted", evicted[s])):
                    scalars[f"dynamic/{table.name}/{what}/shard_{s}"] = float(value)
            totals["rows"] += int(rows.sum())
            totals["admitted"] += int(admitted.sum())
            totals["evicted"] += int(evicted.sum())
            self._rows_at_record[id(table)] = rows
            self._evicted[id(table)] = np.zeros_like(evicted)
        self._summaries(step, scalars)
        return totals

    def _summaries(self, step: int, scalars: dict) -> None:
        if self._model_dir is None:
            return
        writer = summary_writer(os.path.join(self._model_dir, "train"))
        with writer.as_default(step=step):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value)
        writer.flush()

    def describe(self) -> str:
        """Rows, waiting ids and bytes of every shard of every table, and evictions so far."""
        rows = [("dynamic table", "shard", "rows", "waiting", "bytes", "device")]
        for table in self.tables:
            sizes = table.sizes()
            stored = table.shard_bytes(sizes)
            for s, device in enumerate(table.devices):
                rows.append((table.name if s == 0 else "", f"{s}/{table.num_shards}",
                             f"{sizes[s, 0]:,}", f"{sizes[s, 1] - sizes[s, 0]:,}",
                             f"{stored[s]:,}", device))
            rows.append(("", "total", f"{int(sizes[:, 0].sum()):,}",
                         f"{int((sizes[:, 1] - sizes[:, 0]).sum()):,}", f"{sum(stored):,}",
                         f"dim {table.config.dim}, min_count {table.config.min_count}, "
                         f"evicted by this process {self._evicted_total[id(table)]:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
                         for r in rows)
