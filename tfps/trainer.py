"""`tfps.Trainer`: GradientTape training through the ClusterCoordinator.

The chief owns the loop; workers run *closures*; variables live on ps tasks::

    chief:  schedule(train_closure, iterator, n) ──► worker k: n × (pull → tape → push)
            every `log_every` steps: a record      ps: variables, optimizer slots, step
            every `checkpoint_every`: join + save

Example (an in-process cluster; with `tfps-launch` use ``tfps.make_strategy()``):

>>> import tfps, tensorflow as tf
>>> strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=1, num_workers=2))
>>> def make_model():  # any tf.Module, tf_keras or Keras 3 model
...     m = tf.Module(); m.w = tf.Variable(0.0); return m
>>> def data(ctx):
...     x = tf.random.stateless_normal([1024], seed=[ctx.input_pipeline_id, 0])
...     return tf.data.Dataset.from_tensor_slices((x, 3 * x)).repeat().batch(32)
>>> trainer = tfps.Trainer(strategy=strategy, model=make_model,
...     loss_fn=lambda m, b: tf.reduce_mean((m.w * b[0] - b[1]) ** 2),
...     optimizer="sgd", learning_rate=0.1, dataset_fn=data,
...     options=tfps.TrainerOptions(steps_per_closure=10, log_every=0))
>>> round(float(trainer.train(200).loss), 2)  # doctest: +SKIP
0.0

Failure semantics. TF's coordinator runs a closure *at least once*: when a worker dies, closures
it was running are re-scheduled on another worker, so the updates of a partly run closure may be
applied twice. The step counter (on ps) is advanced at the end of each closure, so it counts the
closures that finished. After a ps or chief failure the job restarts from the last checkpoint
and redoes the steps since then (`tfps-launch --max-restarts` does the restarting).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable

import numpy as np

from tfps import optimizers as _optimizers
from tfps.errors import ConfigError
from tfps.evaluation import ExactEvaluator
from tfps.progress import ProgressReporter
from tfps.strategy import _parts, make_coordinator, variable_table

__all__ = ["Trainer", "TrainerOptions", "TrainResult"]

log = logging.getLogger(__name__)

# Packing goal: scheduling overhead at most this fraction of a closure's time...
_PACKING_OVERHEAD = 0.05
# ...but closures no longer than this (a dead worker loses at most one closure of work).
_MAX_CLOSURE_SECONDS = 1.0
_MAX_STEPS_PER_CLOSURE = 1000
# Closures timed per packing size during the automatic measurement.
_CALIBRATION_ROUNDS = 3


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    """Settings of `Trainer`; all have sensible defaults.

    Attributes:
      steps_per_closure: training steps per scheduled closure (packing). None measures the
        scheduling overhead at start and picks the smallest count that keeps it under 5 %
        of a closure (closures capped at about one second).
      accumulate_steps: K > 1 turns on local gradient accumulation: each closure runs K
        micro-batches against one pull of the dense variables and pushes **one** update (the
        mean gradient): one ps round-trip instead of K. The effective batch becomes
        K × batch size, and there are K times fewer updates per example: scale the learning
        rate up (linear scaling: × K for SGD) to keep the progress per example.
        Overrides `steps_per_closure` (a closure is K steps; the last one may be shorter,
        so the step count stays exact). The K-1 micro-batches after the first run in a
        `tf.while_loop` (trace time does not grow with K); when the dataset's element shapes
        are static (``batch(..., drop_remainder=True)``), each closure fetches its K
        micro-batches as one stacked element (PSS fetches each element for ~0.35 ms).
      staleness_aware: scale each update's learning rate by 1 / max(1, τ), where τ counts the
        updates other workers applied between this update's read and its write (Zhang et al.,
        IJCAI 2016). τ is measured with a version counter on ps; a histogram goes to
        TensorBoard. The scaling is exact for SGD and momentum; adaptive optimizers (Adam,
        Adagrad) partly normalise it away.
      checkpoint_every: steps between checkpoints (with a ``model_dir``); None: only at the end.
      max_to_keep: checkpoints kept.
      log_every: steps between progress records; 0 disables them.
      progress_bar: ``"auto"`` (only on a terminal), ``"on"``, ``"off"``.
      eval_shards: exactly-once evaluation splits the eval data into this many shards, one
        closure each; None means 4 per worker.
    """

    steps_per_closure: int | None = None
    accumulate_steps: int = 1
    staleness_aware: bool = False
    checkpoint_every: int | None = 1000
    max_to_keep: int = 3
    log_every: int = 100
    progress_bar: str = "auto"
    eval_shards: int | None = None

    def __post_init__(self):
        def positive(name, allow_none=False, allow_zero=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            low = 0 if allow_zero else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Argument `{name}` must be an integer >= {low}"
                                  f"{' or None' if allow_none else ''}. Received: "
                                  f"{name}={value!r}")
        positive("steps_per_closure", allow_none=True)
        positive("accumulate_steps")
        positive("checkpoint_every", allow_none=True)
        positive("max_to_keep")
        positive("log_every", allow_zero=True)
        positive("eval_shards", allow_none=True)
        if self.progress_bar not in ("auto", "on", "off"):
            raise ConfigError(f"Argument `progress_bar` must be 'auto', 'on' or 'off'. "
                              f"Received: progress_bar={self.progress_bar!r}")


@dataclasses.dataclass
class TrainResult:
    """What `Trainer.train` returns: the final step, the loss of the last closure, and more."""

    step: int
    start_step: int
    loss: float
    steps_per_sec: float
    steps_per_closure: int
    staleness: np.ndarray  # τ of every update measured (staleness_aware only)


def _is_model(obj) -> bool:
    return hasattr(obj, "trainable_variables")


def _tf_variable(var):
    """The TF variable behind `var` (Keras 3 wraps one in a `keras.Variable`)."""
    if type(var).__module__.startswith("keras.") and hasattr(var, "value"):
        return var.value
    return var


class Trainer:
    """Custom-loop training of a model whose variables live on ps tasks.

    Args:
      strategy: a ParameterServerStrategy (`tfps.make_strategy`).
      model: a model, or a zero-argument function that builds one (called under the
        strategy's scope so its variables land on ps tasks). A `tf.Module` (raw
        `tf.Variable`s), a tf_keras model or a Keras 3 model. Pass a builder unless the model
        was already created under ``strategy.scope()``.
      loss_fn: ``loss_fn(model, batch) -> scalar loss``; runs on workers inside a tape.
      optimizer: a tf_keras legacy optimizer, any optimizer with a legacy counterpart
        (converted, see `tfps.optimizers.as_ps_optimizer`), or a name (``"sgd"``).
      dataset_fn: ``dataset_fn(input_context) -> tf.data.Dataset`` of batches, called on each
        worker; shard or seed it by ``input_context.input_pipeline_id``. Must repeat.
      learning_rate: with an optimizer *name*: a float or a schedule (``tfps.schedules``).
      model_dir: checkpoints (restored at start) and TensorBoard summaries; None for neither.
      batch_size: examples per step, for the examples/sec figure.
      eval_dataset_fn: ``eval_dataset_fn(input_context) -> finite dataset`` for `evaluate`:
        the *whole* eval set on every worker (unlike `dataset_fn`, not sharded by pipeline;
        `evaluate` shards it, see `tfps.evaluation.ExactEvaluator`).
      eval_fn: ``eval_fn(model, batch) -> {name: per-batch sum}``; `evaluate` adds these over
        the whole eval set exactly once. If it returns ``count``, every other scalar is divided
        by it in the report (so ``{"loss": sum, "count": n}`` reports a mean loss).
      options: `TrainerOptions`.
    """

    def __init__(self, *, strategy, model, loss_fn: Callable, optimizer, dataset_fn: Callable,
                 learning_rate=None, model_dir: str | None = None, batch_size: int | None = None,
                 eval_dataset_fn: Callable | None = None, eval_fn: Callable | None = None,
                 options: TrainerOptions = TrainerOptions()):
        import tensorflow as tf

        if not getattr(strategy, "_is_parameter_server_strategy_v2", False):
            raise ConfigError(f"Argument `strategy` must be a ParameterServerStrategy "
                              f"(tfps.make_strategy). Received: strategy={strategy!r:.80}")
        for name, fn in (("loss_fn", loss_fn), ("dataset_fn", dataset_fn)):
            if not callable(fn):
                raise ConfigError(f"Argument `{name}` must be callable. Received: {name}={fn!r}")
        if (eval_dataset_fn is None) != (eval_fn is None):
            raise ConfigError("Arguments `eval_dataset_fn` and `eval_fn` go together. Received: "
                              f"eval_dataset_fn={eval_dataset_fn!r}, eval_fn={eval_fn!r}")
        if not isinstance(options, TrainerOptions):
            raise ConfigError(f"Argument `options` must be a TrainerOptions. "
                              f"Received: options={options!r}")
        self.strategy = strategy
        self.coordinator = make_coordinator(strategy)
        self.options = options
        self.model_dir = model_dir
        self.batch_size = batch_size
        self._loss_fn, self._eval_fn = loss_fn, eval_fn
        self._dataset_fn = dataset_fn
        self._eval_dataset_fn = eval_dataset_fn
        self._evaluator = None
        self._num_workers = strategy.extended._num_workers
        with strategy.scope():
            self.model = model if _is_model(model) else model()
            if not _is_model(self.model):
                raise ConfigError(f"Argument `model` must be a model (with "
                                  f"trainable_variables) or a function returning one. "
                                  f"Received: model={self.model!r:.80}")
            if isinstance(optimizer, str):
                kwargs = {} if learning_rate is None else {"learning_rate": learning_rate}
                optimizer = _optimizers.as_ps_optimizer(optimizer, **kwargs)
            elif learning_rate is not None:
                raise ConfigError("Argument `learning_rate` is only for an optimizer name; "
                                  f"set it on the optimizer. Received: learning_rate="
                                  f"{learning_rate!r}")
            self.optimizer = _optimizers.as_ps_optimizer(optimizer)
            # Steps finished (closures count their steps when they end) and, for staleness,
            # updates applied: both on ps, both in the checkpoint.
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.version = tf.Variable(0, dtype=tf.int64, trainable=False, name="version")
        self._variables = [p for v in self.model.trainable_variables
                           for p in _parts(_tf_variable(v))]
        if not self._variables:
            raise ConfigError("Argument `model` has no trainable variables; build it (e.g. "
                              "call it once or give its input shape) in the model function.")
        self._lr_scale = 1.0  # a tensor of the closure being traced, when staleness_aware
        # Variable name -> "IndexedSlices" / the dense gradient's type, filled when the
        # training closure is traced (for users checking that lookups stay sparse).
        self.gradient_types: dict[str, str] = {}
        if options.staleness_aware:
            self._wrap_learning_rate()
        self._checkpoint = None
        if model_dir:
            self._checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                                   step=self.global_step, version=self.version)
            self._manager = tf.train.CheckpointManager(
                self._checkpoint, os.path.join(model_dir, "checkpoints"),
                max_to_keep=options.max_to_keep)
        self._train_fn = tf.function(self._train_closure)
        self._accum_fn = tf.function(self._accumulate_closure)
        self._iterator = None
        self._stacked = False  # set by _ensure_iterator
        self._measured_packing = None  # steps per closure, once measured
        self.restored_step = self.restore()

    # --------------------------------------------------------------------------- on workers
    def _wrap_learning_rate(self):
        """Makes the optimizer's learning rate ``base(step) * self._lr_scale``."""
        import tensorflow as tf

        optimizer = self.optimizer
        base = optimizer._hyper["learning_rate"]  # float, schedule or (if used) a variable

        def learning_rate():
            lr = base
            if callable(lr) and not isinstance(lr, tf.Variable):  # a schedule: at the step
                lr = lr(tf.cast(optimizer.iterations, tf.float32))
            return tf.cast(lr, tf.float32) * self._lr_scale

        # OptimizerV2 calls a callable hyperparameter each time it reads it (_get_hyper), so
        # the scale traced into each closure applies to that closure's update only. Assigned
        # into _hyper directly: `optimizer.learning_rate = fn` would try to write the function
        # into an existing learning-rate variable (_set_hyper -> backend.set_value).
        optimizer._hyper["learning_rate"] = learning_rate

    def _read_version(self):
        """The update counter before this update's reads (staleness_aware only), else None."""
        return self.version.read_value() if self.options.staleness_aware else None

    def _apply(self, grads, read_version):
        """Applies `grads`; with staleness awareness, measures τ and scales the lr first."""
        import tensorflow as tf

        tau = tf.constant(0, tf.int64)
        if self.options.staleness_aware:
            # Count this update only once its gradient exists; otherwise the increment may run
            # right after the read (they touch the same resource) and τ would always be 0.
            computed = [g.values if isinstance(g, tf.IndexedSlices) else g
                        for g in grads if g is not None]
            with tf.control_dependencies(computed):
                tau = self.version.assign_add(1, read_value=True) - 1 - read_version
            self._lr_scale = 1.0 / tf.cast(tf.maximum(tau, 1), tf.float32)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, self._variables) if g is not None])
        self._lr_scale = 1.0
        return tau

    def _replica_step(self, batch):
        import tensorflow as tf

        read_version = self._read_version()
        with tf.control_dependencies(_deps(read_version)), tf.GradientTape() as tape:
            loss = self._loss_fn(self.model, batch)
        grads = tape.gradient(loss, self._variables)  # IndexedSlices stay sparse
        self._note_gradient_types(grads)
        return loss, self._apply(grads, read_version)

    def _note_gradient_types(self, grads):
        # At trace time: which variables get sparse (IndexedSlices) and which dense updates.
        self.gradient_types = {v.name: type(g).__name__ for v, g in zip(self._variables, grads)}

    def _train_closure(self, iterator, num_steps):
        """`num_steps` steps, each one pull → gradient → push. Returns (mean loss, τs)."""
        import tensorflow as tf

        total = tf.constant(0.0)
        taus = tf.TensorArray(tf.int64, size=num_steps)
        for i in tf.range(num_steps):
            loss, tau = self.strategy.run(self._replica_step, args=(_next(iterator),))
            total += tf.cast(loss, tf.float32)
            taus = taus.write(i, tau)
        self.global_step.assign_add(tf.cast(num_steps, tf.int64))
        return total / tf.cast(num_steps, tf.float32), taus.stack()

    # Local accumulation: K micro-batches, one pull of the dense variables, one push.
    #
    # Under `cache_variable_reads` a dense variable is read from ps once, at its first use,
    # and the local copy serves every later read in the scope (CachingVariable, ps_values.py;
    # tf_keras's exact evaluation uses the same scope). Embedding lookups (sparse_read) bypass
    # the cache and fetch only their rows. The first micro-batch runs on its own: it fills the
    # caches and shows which variables have one. The other K-1 run in a `tf.while_loop`, so
    # trace time does not grow with K; each takes its gradient with respect to the local
    # copies (the loop body's captures of the cached tensors, which the model's reads resolve
    # to) and the loop sums them. The update applies the mean.
    def _accumulate_closure(self, iterator, k: int):
        """K micro-batches, one update. `k` is a Python int: a short last closure (fewer
        steps left than accumulate_steps) is one more trace, and the step count stays exact."""
        import tensorflow as tf
        from tensorflow.python.distribute import distribute_utils

        with distribute_utils.cache_variable_reads():
            # The cache's freshness check compares a per-variable counter with a *thread-local*
            # count of scopes entered, and a stale read only moves the variable's counter up by
            # one. The coordinator traces closures on its own thread and then again on each
            # worker's thread, so the two drift apart: a counter ahead of this thread's hands
            # out a tensor cached in another trace (a FuncGraph that is gone: "out of scope"
            # TypeError), and one behind by n re-reads the variable from ps at each of its
            # next n reads (in the loop body too). Start each trace in step, caches empty.
            for var in self._variables:
                if hasattr(var, "_cache"):
                    var._cache = None
                    var._current_new_cache_scope_count = \
                        distribute_utils.caching_scope_local.new_cache_scope_count
            if self._stacked:  # one fetch: K micro-batches stacked by _ensure_iterator
                stacked = _next(iterator)

                def micro_batch(i):
                    return tf.nest.map_structure(lambda t: t[i], stacked)
            else:
                def micro_batch(i):
                    return _next(iterator)
            loss, grads, read_version = self.strategy.run(
                self._first_micro_batch, args=(micro_batch(0),))
            cached = [getattr(var, "_cache", None) for var in self._variables]
            grads = [None if g is None else tf.convert_to_tensor(g) if c is not None else g
                     for g, c in zip(grads, cached)]  # a local copy's gradient is dense
            if k > 1:
                loss, grads = self._more_micro_batches(micro_batch, k - 1, loss, grads, cached)
            tau = self.strategy.run(self._apply_mean, args=(grads, k, read_version))
        self.global_step.assign_add(k)
        return loss / k, tf.reshape(tau, [1])

    def _first_micro_batch(self, batch):
        import tensorflow as tf

        read_version = self._read_version()
        with tf.control_dependencies(_deps(read_version)), tf.GradientTape() as tape:
            loss = tf.cast(self._loss_fn(self.model, batch), tf.float32)
        grads = tape.gradient(loss, self._variables)  # IndexedSlices stay sparse
        self._note_gradient_types(grads)
        return loss, grads, read_version

    def _more_micro_batches(self, micro_batch, n: int, loss, grads, cached):
        """Runs micro-batches ``micro_batch(1)`` .. ``micro_batch(n)`` in a while loop; returns
        the summed loss and gradients (a sparse one as the IndexedSlices of all their rows)."""
        import tensorflow as tf

        live = [i for i, g in enumerate(grads) if g is not None]  # variables with a gradient
        copies = [i for i in live if cached[i] is not None]       # ... and a local copy
        copied = set(copies)

        def one(batch):
            graph = tf.compat.v1.get_default_graph()  # the loop body
            local = [graph.capture(cached[i]) for i in copies]
            with tf.GradientTape() as tape:
                tape.watch(local)
                step_loss = tf.cast(self._loss_fn(self.model, batch), tf.float32)
            by_var, by_copy = tape.gradient(step_loss, ([self._variables[i] for i in live], local))
            return step_loss, by_var, dict(zip(copies, by_copy))

        def add(i, acc, g, g_copy):
            if i in copied:  # a local copy: its gradient, plus any sparse reads'
                extra = [tf.convert_to_tensor(x) for x in (g_copy, g) if x is not None]
                return tf.add_n([acc, *extra]) if extra else acc
            if g is None:
                return acc
            if isinstance(acc, tuple):  # a sparse gradient: concatenate the rows
                if not isinstance(g, tf.IndexedSlices):
                    raise TypeError(f"tfps: the gradient of {self._variables[i].name} was "
                                    f"sparse for the first micro-batch and dense for the next")
                return tf.concat([acc[0], g.indices], 0), tf.concat([acc[1], g.values], 0)
            return acc + tf.convert_to_tensor(g)

        def body(step, total, accs):
            step_loss, by_var, by_copy = self.strategy.run(one, args=(micro_batch(step + 1),))
            return step + 1, total + step_loss, [
                add(i, acc, g, by_copy.get(i)) for i, acc, g in zip(live, accs, by_var)]

        first = [grads[i] for i in live]
        accs = [(g.indices, g.values) if isinstance(g, tf.IndexedSlices) else g for g in first]
        shapes = [(tf.TensorShape([None]), tf.TensorShape([None]).concatenate(a[1].shape[1:]))
                  if isinstance(a, tuple) else a.shape for a in accs]
        _, loss, accs = tf.while_loop(
            lambda step, *_: step < n, body, (tf.constant(0), loss, accs),
            shape_invariants=(tf.TensorShape([]), loss.shape, shapes))
        summed = list(grads)
        for i, g, acc in zip(live, first, accs):
            summed[i] = (tf.IndexedSlices(acc[1], acc[0], g.dense_shape)
                         if isinstance(g, tf.IndexedSlices) else acc)
        return loss, summed

    def _apply_mean(self, grads, k: int, read_version):
        import tensorflow as tf

        mean = [None if g is None else
                tf.IndexedSlices(g.values / k, g.indices, g.dense_shape)
                if isinstance(g, tf.IndexedSlices) else g / k for g in grads]
        return self._apply(mean, read_version)

    # --------------------------------------------------------------------------- on the chief
    def restore(self) -> int:
        """Restores the latest checkpoint under ``model_dir``, if any; returns its step."""
        if self._checkpoint is None or self._manager.latest_checkpoint is None:
            return 0
        # Under the scope: restoring creates the optimizer's slots (Adagrad accumulators, ...)
        # for variables that already exist, and tf_keras refuses to create them outside the
        # strategy their variables belong to (OptimizerV2.add_slot).
        with self.strategy.scope():
            self._checkpoint.restore(self._manager.latest_checkpoint)
        step = int(self.global_step.numpy())
        log.info("tfps: restored %s (step %d)", self._manager.latest_checkpoint, step)
        return step

    def save(self) -> str | None:
        """Writes a checkpoint now (all scheduled closures are joined first)."""
        if self._checkpoint is None:
            return None
        self.coordinator.join()
        return self._manager.save(checkpoint_number=int(self.global_step.numpy()))

    def _ensure_iterator(self):
        """The per-worker iterator. With accumulation, each element stacks the K micro-batches
        of one closure when their shapes are static (so stacking cannot fail): PSS fetches a
        per-worker element through a MultiDeviceIterator at ~0.35 ms each on 2 cores, whatever
        its size (measured: 347 us per micro-batch fetched one by one, 47 us stacked by 256),
        which would otherwise be most of a small model's micro-batch. A short last closure
        uses the first micro-batches of its element."""
        if self._iterator is None:
            strategy, dataset_fn = self.strategy, self._dataset_fn
            k = self.options.accumulate_steps

            def stacked_dataset_fn(context):
                dataset = dataset_fn(context)
                if k > 1 and _static_shapes(dataset.element_spec) and \
                        getattr(strategy.extended, "_num_gpus_per_worker", 0) <= 1:
                    self._stacked = True
                    return dataset.batch(k, drop_remainder=True)
                return dataset

            def per_worker_dataset():
                return strategy.distribute_datasets_from_function(stacked_dataset_fn)

            self._iterator = iter(self.coordinator.create_per_worker_dataset(per_worker_dataset))
        return self._iterator

    def _schedule(self, num_steps: int):
        import tensorflow as tf

        iterator = self._ensure_iterator()
        if self.options.accumulate_steps > 1:
            return self.coordinator.schedule(self._accum_fn, args=(iterator, num_steps))
        return self.coordinator.schedule(self._train_fn,
                                         args=(iterator, tf.constant(num_steps, tf.int32)))

    def measure_packing(self, budget_steps: int) -> tuple[int, int]:
        """Times closures of 1 and 8 steps; returns (steps per closure to use, steps spent).

        One closure per worker runs at once, so a round's wall time is one closure's latency.
        The measured steps are real training steps (they count); at most `budget_steps`.
        """
        workers = self._num_workers

        def timed(n):
            start = time.perf_counter()
            remotes = [self._schedule(n) for _ in range(workers)]
            for r in remotes:
                r.fetch()
            return time.perf_counter() - start, n * len(remotes)

        # The first round traces the function (not timed), then rounds of 1 and 8 steps.
        if budget_steps < 10 * workers:  # too short a run to measure: one closure per worker
            return min(max(1, budget_steps // workers), _MAX_STEPS_PER_CLOSURE), 0
        used = timed(1)[1]
        t1 = t8 = math.inf
        for _ in range(_CALIBRATION_ROUNDS):
            if used + 9 * workers > budget_steps:
                break
            a, n_a = timed(1)
            b, n_b = timed(8)
            t1, t8, used = min(t1, a), min(t8, b), used + n_a + n_b
        per_step = max((t8 - t1) / 7, 1e-6)
        overhead = max(t1 - per_step, 0.0)
        wanted = math.ceil(overhead / (_PACKING_OVERHEAD * per_step))
        capped = min(wanted, int(_MAX_CLOSURE_SECONDS / per_step), _MAX_STEPS_PER_CLOSURE)
        log.info("tfps: packing: %.2f ms/step, %.2f ms scheduling overhead -> %d steps/closure",
                 per_step * 1e3, overhead * 1e3, max(capped, 1))
        return max(capped, 1), used

    def train(self, train_steps: int) -> TrainResult:
        """Trains until the global step reaches `train_steps` (resuming from a checkpoint).

        Returns:
          A `TrainResult`. With a ``model_dir``, a checkpoint is written every
          ``options.checkpoint_every`` steps and at the end.
        """
        if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 0:
            raise ConfigError(f"Argument `train_steps` must be an integer >= 0. "
                              f"Received: train_steps={train_steps!r}")
        opts = self.options
        start = int(self.global_step.numpy())
        step = start
        reporter = ProgressReporter(train_steps, self.model_dir, opts.progress_bar)
        reporter.start(step)
        t0 = time.perf_counter()
        if opts.accumulate_steps > 1:
            per_closure = opts.accumulate_steps
        elif opts.steps_per_closure:
            per_closure = opts.steps_per_closure
        elif self._measured_packing:
            per_closure = self._measured_packing
        elif step >= train_steps:
            per_closure = 1  # nothing to train: no measurement either
        else:
            per_closure, used = self.measure_packing(train_steps - step)
            step += used
            if used:  # a real measurement: keep it for later calls
                self._measured_packing = per_closure
        pending = collections.deque()  # (step after the closure, RemoteValue)
        taus: list[np.ndarray] = []
        last_loss = math.nan
        next_log = (step // opts.log_every + 1) * opts.log_every if opts.log_every else None
        every = opts.checkpoint_every
        next_ckpt = (step // every + 1) * every if every else None

        def drain(keep: int):
            nonlocal last_loss
            while len(pending) > keep:
                _, remote = pending.popleft()
                loss, tau = remote.fetch()
                last_loss = float(loss)
                if opts.staleness_aware:
                    taus.append(np.asarray(tau))

        while step < train_steps:
            n = min(per_closure, train_steps - step)
            step += n
            pending.append((step, self._schedule(n)))
            drain(keep=2 * self._num_workers)  # bounded look-ahead, losses stay current
            if next_log is not None and step >= next_log:
                drain(keep=0)
                self._report(reporter, step, last_loss, taus)
                next_log = (step // opts.log_every + 1) * opts.log_every
            if next_ckpt is not None and step >= next_ckpt and step < train_steps:
                drain(keep=0)
                self.save()
                next_ckpt = (step // every + 1) * every
        drain(keep=0)
        self.coordinator.join()
        final = int(self.global_step.numpy())
        elapsed = time.perf_counter() - t0
        if opts.log_every and final > start and final % opts.log_every:
            self._report(reporter, final, last_loss, taus)
        self.save()
        reporter.close()
        staleness = np.concatenate(taus) if taus else np.zeros([0], np.int64)
        return TrainResult(step=final, start_step=start, loss=last_loss,
                           steps_per_sec=(final - start) / max(elapsed, 1e-9),
                           steps_per_closure=per_closure, staleness=staleness)

    def _report(self, reporter, step, loss, taus):
        rate = reporter.rate(step)
        values = {"steps/sec": rate}
        if self.batch_size:
            values["examples/sec"] = rate * self.batch_size
        values["loss"] = loss
        values["lr"] = self.current_learning_rate()
        histograms = {}
        if self.options.staleness_aware and taus:
            recent = np.concatenate(taus[-50:])
            values["staleness"] = float(recent.mean())
            histograms["staleness"] = np.concatenate(taus)
        reporter.record("train", step, values, histograms)

    def current_learning_rate(self) -> float:
        """The optimizer's base learning rate at its current step (chief-side read)."""
        import tensorflow as tf

        lr = self.optimizer._get_hyper("learning_rate")  # calls a staleness wrapper
        if callable(lr) and not tf.is_tensor(lr) and not isinstance(lr, tf.Variable):
            lr = lr(tf.cast(self.optimizer.iterations, tf.float32))  # a schedule
        return float(tf.convert_to_tensor(lr))

    def evaluate(self) -> dict[str, Any]:
        """Evaluates on ``eval_dataset_fn``'s data, each batch exactly once.

        ``options.eval_shards`` closures, one per shard (`tfps.evaluation.ExactEvaluator`).
        Returns the summed ``eval_fn`` outputs, scalars divided by ``count`` when ``eval_fn``
        returns one.
        """
        if self._eval_fn is None:
            raise ConfigError("evaluate() needs `eval_dataset_fn` and `eval_fn`. "
                              "Received: eval_fn=None")
        if self._evaluator is None:
            self._evaluator = ExactEvaluator(
                strategy=self.strategy, model=self.model, dataset_fn=self._eval_dataset_fn,
                eval_fn=self._eval_fn,
                num_shards=self.options.eval_shards or 4 * self._num_workers)
        return self._evaluator()

    def summarize_eval(self, metrics: dict, step: int | None = None) -> str:
        """Prints an ``eval | step: ...`` record and writes it to TensorBoard (``eval/``)."""
        step = int(self.global_step.numpy()) if step is None else step
        reporter = ProgressReporter(step, self.model_dir, "off")
        scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        line = reporter.record("eval", step, scalars)
        reporter.close()
        return line

    def describe(self) -> str:
        """The variable-shard table: where every variable and shard of the model lives."""
        return variable_table([_tf_variable(v) for v in self.model.trainable_variables])


def _static_shapes(element_spec) -> bool:
    import tensorflow as tf
    return all(isinstance(spec, tf.TensorSpec) and spec.shape.is_fully_defined()
               for spec in tf.nest.flatten(element_spec))


def _next(iterator):
    """The next batch of a per-worker iterator, inside a closure, without the partial-batch
    machinery.

    PSS builds every per-worker iterator's spec with ``enable_get_next_as_optional=True``
    (``input_lib.get_iterator_spec_from_dataset``), so ``next(iterator)`` is an
    ``IteratorGetNextAsOptional``, a count of the replicas that got data and a ``tf.cond``:
    work per step that only matters at the end of a finite dataset with several replicas per
    worker (it hands out dummy batches there). Training data repeats, and at its end both
    paths raise ``OutOfRangeError``. TF's own comment on the plain path: "considerably
    faster". Falls back to ``next`` for iterators without it.
    """
    plain = getattr(iterator, "_get_next_no_partial_batch_handling", None)
    return plain() if plain is not None else next(iterator)


def _deps(read_version) -> list:
    # The counter must be read before the model's variables: nothing else orders two reads of
    # different resources inside a tf.function, and a late read would measure no staleness.
    return [] if read_version is None else [read_version]
