"""`FileInput`: training on files, every record exactly once per epoch, also when workers die.

The chief owns the epoch (`tfps.data.ledger.Ledger`): it hands each closure a *unit*, the next
``steps × batch_size`` records of the epoch named by file and record range, as the closure's
tensor arguments. The closure reads exactly those records (`tfps.data.readers`: on the
training worker, or through TF's tf.data service), parses them with the user's ``parse_fn``
and trains on them batch by batch. TF's coordinator re-runs a closure whose worker died with
the same arguments, so the re-run reads the same records; the unit counts in the ledger once,
when the closure's result arrives. The ledger goes into the Trainer's checkpoints, so a
resumed job continues inside its epoch.

>>> import tensorflow as tf, tfps.data  # doctest: +SKIP
>>> spec = {"x": tf.io.FixedLenFeature([4], tf.float32), "y": tf.io.FixedLenFeature([], tf.float32)}
>>> data = tfps.data.FileInput("data/train-*.tfrecord", batch_size=512,  # doctest: +SKIP
...     parse_fn=lambda records: tf.io.parse_example(records, spec))
>>> trainer = tfps.Trainer(..., data=data)  # doctest: +SKIP
>>> trainer.train(3 * trainer.steps_per_epoch)  # three epochs  # doctest: +SKIP

Batches: the last batch of an epoch holds what is left (``records % batch_size``); the batch
dimension of every batch is dynamic, so it is the same trace.

Failure semantics: exactly once per epoch in the ledger, whatever fails (a worker, a data
worker: see `tfps.data.readers`). A worker that dies mid-closure may have applied some of the
closure's updates before the re-run applies them again (TF's at-least-once closures); the
records it reads are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tfps import _tf, validate
from tfps.data import records as _records
from tfps.data.feed import Feed
from tfps.data.ledger import Ledger, Unit, Visitation
from tfps.data.readers import Reader, Service, Shard, read_local
from tfps.data.sources import DataError, FileSet, detect_format, resolve

tf = _tf.require()

__all__ = ["FileInput", "files_summary"]

log = logging.getLogger(__name__)

# The default mode: read on the training workers.
_SHARD = Shard()
# Segments per unit are padded to a power of two (at least this): closures with 1 to 4 files
# in their unit share one trace.
_MIN_SEGMENTS = 4


class _LedgerState(tf.Module):
    """What a checkpoint keeps of the ledger: its JSON state in a string variable on the
    chief (written before each save; a traced save reads variables, not Python values)."""

    def __init__(self):
        super().__init__(name="data_ledger")
        with tf.init_scope():
            self.state = tf.Variable("", dtype=tf.string, trainable=False, name="state")


class FileInput:
    """TFRecord or CSV files as a Trainer's input (`tfps.data.feed.ClosureInput`).

    Args:
      files: a glob pattern, a path, or a list of them (each a glob too).
      parse_fn: ``parse_fn(records) -> nest of tensors``: a vector of serialized records
        (TFRecord) or lines (CSV) to a batch, one row per record (``tf.io.parse_example``,
        ``tf.io.decode_csv``); it may see any number of records at once.
      batch_size: records per step.
      mode: `tfps.data.Shard()` (read on the training workers, the default) or
        `tfps.data.Service()` (read by the tf.data service's data workers).
      format: ``"tfrecord"`` or ``"csv"``; None: from the file names.
      compression: TFRecord compression (``"GZIP"``, ``"ZLIB"``) or None.
      csv_header: CSV files start with a header line.
      shuffle: permute the files' order every epoch, and each unit's records.
      seed: the permutations' seed.

    Raises:
      tfps.data.DataError: no file matches, a file is unreadable or corrupt, or `parse_fn`
        rejects one of the first records (one line naming the file and the record).
    """

    def __init__(self, files: str | Sequence[str], *, parse_fn: Callable, batch_size: int,
                 mode: Reader = _SHARD, format: str | None = None,
                 compression: str | None = None, csv_header: bool = False,
                 shuffle: bool = True, seed: int = 0):
        if not callable(parse_fn):
            raise validate.fail("parse_fn", parse_fn, "a function of a vector of records")
        self.batch_size = validate.integer("batch_size", batch_size, low=1, high=1 << 24)
        if not isinstance(mode, (Shard, Service)):
            raise validate.fail("mode", mode, "tfps.data.Shard() or tfps.data.Service()")
        paths = resolve(files)
        self.format = _records.RecordFormat(detect_format(paths, format), compression,
                                            csv_header)
        counts = _records.count_records(self.format, paths)
        if not sum(counts):
            raise DataError(f"the {len(paths)} file(s) of {files!r:.80} hold no record")
        self.files = FileSet(tuple(paths), tuple(counts), self.format.format)
        self.parse_fn = parse_fn
        self.mode = mode.resolve()
        self.ledger = Ledger(counts, self.batch_size, shuffle=shuffle, seed=seed)
        self._seed = int(seed) if shuffle else None
        self._spec = self._check_parse()
        self._state: _LedgerState | None = None

    def _check_parse(self):
        """The parsed batch's spec, after parsing the first batch of records on the chief."""
        for path, count in zip(self.files.paths, self.files.counts):
            if count:
                found = _records.find_rejected(
                    self.parse_fn,
                    self.format.segment_records(path, 0, min(count, self.batch_size)))
                if found is not None:
                    raise _rejected(path, *found)
                break
        return _records.output_spec(self.parse_fn)

    # ------------------------------------------------------------------------ what it holds
    @property
    def records_per_epoch(self) -> int:
        return self.files.records

    @property
    def steps_per_epoch(self) -> int:
        """Steps of an epoch (``ceil(records / batch_size)``)."""
        return self.ledger.steps_per_epoch

    def visitation(self, epochs: int | None = None) -> Visitation:
        """Records seen once / more than once / never, from the ledger (`Ledger.visitation`)."""
        return self.ledger.visitation(epochs)

    # ------------------------------------------------------------------------ ClosureInput
    @property
    def element_spec(self):
        return self._spec

    def start(self, coordinator, strategy, steps_per_closure: int) -> None:
        pass  # every closure's arguments name its records: nothing to create per worker

    def feed(self, num_steps: int) -> Feed:
        unit = self.ledger.next_unit(max_records=num_steps * self.batch_size)
        steps = -(-unit.records // self.batch_size)
        return Feed(args=self._args(unit), steps=steps, token=unit)

    def _args(self, unit: Unit) -> tuple:
        n = max(_MIN_SEGMENTS, 1 << (len(unit.segments) - 1).bit_length())
        pad = n - len(unit.segments)
        paths = [self.files.paths[f] for f, _, _ in unit.segments] + [""] * pad
        firsts = [s for _, s, _ in unit.segments] + [0] * pad
        counts = [c for _, _, c in unit.segments] + [0] * pad
        seed = [self._seed if self._seed is not None else -1, unit.epoch * 2**31 + unit.start]
        return (tf.constant(paths, tf.string), tf.constant(firsts, tf.int64),
                tf.constant(counts, tf.int64), tf.constant(seed, tf.int64))

    def batches(self, args, num_steps, replay: bool = False) -> Callable:
        paths, firsts, counts, seed = args
        rows = self.mode.read(self.format, self.parse_fn, self._spec, paths, firsts, counts)
        if self._seed is not None:  # the same permutation in a re-run: seeded by the unit
            keys = tf.random.stateless_uniform(tf.reshape(tf.reduce_sum(counts), [1]), seed=seed)
            order = tf.argsort(keys)
            rows = tf.nest.map_structure(lambda t: tf.gather(t, order), rows)
        size = self.batch_size

        def batch_at(i):
            return tf.nest.map_structure(lambda t: t[i * size:(i + 1) * size], rows)

        return batch_at  # one tensor per feature: batch_at(i) is the same batch every call

    def finished(self, feed: Feed) -> None:
        self.ledger.finish(feed.token)

    # ------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_object(self) -> tf.Module:
        """What the Trainer's checkpoint tracks (as ``data``): the ledger's state."""
        if self._state is None:
            self._state = _LedgerState()
        return self._state

    def before_save(self) -> None:
        """Writes the ledger into `checkpoint_object` (the loop saves with nothing in flight)."""
        self.checkpoint_object.state.assign(self.ledger.state())

    def after_restore(self, step: int) -> None:
        """Continues the ledger a checkpoint of `step` steps holds (nothing if it holds none).

        Raises:
          DataError: the checkpoint's ledger is of other files.
        """
        text = self.checkpoint_object.state.numpy().decode()
        if not text:
            return
        try:
            self.ledger.restore(text)
        except ValueError as e:
            raise DataError(f"the checkpoint's data ledger does not fit these files: {e}"
                            ) from None
        log.info("tfps.data: resuming at epoch %d, record %d of %d (step %d)",
                 self.ledger.epoch, self.ledger.position, self.records_per_epoch, step)

    # ------------------------------------------------------------------------ bad records
    def explain(self, error: Exception) -> DataError | None:
        """The `DataError` naming the file and record behind a failed closure, found by
        reading and parsing the units in flight here on the chief; None if none fails."""
        for unit in self.ledger.in_flight:
            for file, first, count in unit.segments:
                path = self.files.paths[file]
                try:
                    records = self.format.segment_records(path, first, count)
                except tf.errors.OpError as e:
                    return DataError(f"file {path!r}: cannot be read during training "
                                     f"({_records.tf_message(e)})", path=path)
                found = _records.find_rejected(self.parse_fn, records)
                if found is not None:
                    return _rejected(path, first + found[0], found[1])
        return None

    # ------------------------------------------------------------------------ as a dataset
    def __call__(self, input_context=None):
        """One pass over the records as a `tf.data.Dataset` of parsed batches, in file order:
        the input pipeline's share of them (a contiguous range of records) when
        `input_context` has several pipelines. So a `FileInput` is also a ``dataset_fn``
        (Keras `fit`, `Trainer(eval_dataset_fn=...)`); the Trainer's own closures and its
        evaluation read units and record ranges instead."""
        pipelines = getattr(input_context, "num_input_pipelines", 1) or 1
        index = getattr(input_context, "input_pipeline_id", 0) or 0
        paths, firsts, counts = self.eval_args(pipelines, index)
        fmt, batch = self.format, self.batch_size
        records = tf.data.Dataset.from_tensor_slices((paths, firsts, counts)).filter(
            lambda p, f, c: c > 0).flat_map(lambda p, f, c: fmt.dataset(p, f, c))
        return records.batch(batch).map(self.parse_fn, num_parallel_calls=tf.data.AUTOTUNE)

    # ------------------------------------------------------------------------ evaluation
    def eval_args(self, num_shards: int, index: int) -> tuple:
        """Shard `index` of `num_shards` of every record, in file order, as a closure's args."""
        start = self.records_per_epoch * index // num_shards
        end = self.records_per_epoch * (index + 1) // num_shards
        plain = Ledger(self.files.counts, self.batch_size)
        segments = plain.segments(0, start, end - start) if end > start else ()
        return self._args(Unit(0, start, end - start, segments))[:3]

    def eval_dataset(self, args) -> tuple[Callable, object]:
        """``(batch_at, number of batches)`` of an `eval_args` shard, read inside the
        evaluation closure."""
        paths, firsts, counts = args
        rows = read_local(self.format, self.parse_fn, paths, firsts, counts)
        size = self.batch_size
        batches = (tf.reduce_sum(counts) + size - 1) // size
        return (lambda i: tf.nest.map_structure(lambda t: t[i * size:(i + 1) * size], rows),
                batches)

    def eval_shards(self, num_shards: int) -> int:
        """Shards for an evaluation: at most one per batch."""
        return max(1, min(num_shards, self.steps_per_epoch))


def _rejected(path: str, record: int, error: str) -> DataError:
    return DataError(f"file {path!r}: record {record}: the parse function rejects it "
                     f"({error})", path=path, record=record)


def files_summary(data: FileInput) -> str:
    """One line: files, records, steps per epoch, mode."""
    return (f"tfps.data: {len(data.files.paths)} {data.format.format} file(s), "
            f"{data.records_per_epoch:,} records, {data.steps_per_epoch} steps of "
            f"{data.batch_size} per epoch, mode {type(data.mode).__name__.lower()}")

