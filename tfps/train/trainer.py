"""`tfps.Trainer`: GradientTape training through the ClusterCoordinator.

The chief owns the loop; workers run *closures*; variables live on ps tasks::

    chief:  schedule(train_closure, iterator, n) ──► worker k: n × (pull → tape → push)
            every `log_every` steps: a record      ps: variables, optimizer slots
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
applied twice. The step count stays exact: the chief counts each closure once, when its result
arrives. After a ps or chief failure the job restarts from the last checkpoint and redoes the
steps since then (`tfps-launch --max-restarts` does the restarting).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from tfps import _tf, errors, exit_codes, policy, validate
from tfps.checkpoints import layout
from tfps.checkpoints.manager import Checkpoints
from tfps.data import feed
from tfps.data.iterators import closure_input
from tfps.errors import ConfigError
from tfps.schedules import check_run
from tfps.strategy import make_coordinator, shards, variable_table
from tfps.train import arguments, driving, optim_math, optimizers, traffic
from tfps.train.closures import Closures
from tfps.train.dynamic import DynamicTables
from tfps.train.evaluation import ExactEvaluator
from tfps.train.loop import Stopped
from tfps.train.options import TrainerOptions, TrainResult
from tfps.train.preemption import PREEMPTION
from tfps.train.progress import ProgressReporter
from tfps.train.staleness import Staleness
from tfps.train.steps import StepFunctions

tf = _tf.require()

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

# The options a Trainer gets when given none (frozen: one instance serves every Trainer).
_DEFAULT_OPTIONS = TrainerOptions()


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
      data: instead of `dataset_fn`, a `tfps.data.feed.ClosureInput` such as
        `tfps.data.FileInput` (files, each record once per epoch; `steps_per_epoch`).
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

    def __init__(self, *, strategy, model, loss_fn: Callable, optimizer,
                 dataset_fn: Callable | None = None, data=None,
                 learning_rate=None, model_dir: str | None = None, batch_size: int | None = None,
                 eval_dataset_fn: Callable | None = None, eval_fn: Callable | None = None,
                 options: TrainerOptions = _DEFAULT_OPTIONS):
        if not isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
            raise ConfigError(f"Argument `strategy` must be a ParameterServerStrategy "
                              f"(tfps.make_strategy). Received: strategy={strategy!r:.80}")
        # Every argument, before anything is built (tfps.train.arguments; docs/settings.md).
        arguments.check(model=model, loss_fn=loss_fn, optimizer=optimizer,
                        dataset_fn=dataset_fn, learning_rate=learning_rate,
                        model_dir=model_dir, batch_size=batch_size,
                        eval_dataset_fn=eval_dataset_fn, eval_fn=eval_fn, options=options)
        self.data = closure_input(dataset_fn=dataset_fn, data=data,
                                  stack_steps=getattr(options, "stack_steps", True))
        if (eval_dataset_fn is None) != (eval_fn is None):
            raise ConfigError("Arguments `eval_dataset_fn` and `eval_fn` go together. Received: "
                              f"eval_dataset_fn={eval_dataset_fn!r}, eval_fn={eval_fn!r}")
        self.strategy = strategy
        self.coordinator = make_coordinator(strategy)
        self.options = options
        self.model_dir = model_dir
        self.batch_size = batch_size
        self._dataset_fn = dataset_fn
        self._eval = (eval_dataset_fn, eval_fn)
        self._evaluator = None
        self._workers = _tf.num_workers(strategy)
        self._model_fn = None if _is_model(model) else model  # builds export copies too
        with strategy.scope():
            self.model = model if _is_model(model) else model()
            if not _is_model(self.model):
                raise ConfigError(f"Argument `model` must be a model (with "
                                  f"trainable_variables) or a function returning one. "
                                  f"Received: model={self.model!r:.80}")
            self.optimizer = self._make_optimizer(optimizer, learning_rate)
            # Checked against each run's steps in `train` (the staleness scaling below
            # wraps the learning rate, schedule and all, in a function of no argument).
            self._schedule = optimizers.learning_rate_schedule(self.optimizer)
            # The finished-step count (written by the chief, `tfps.train.loop`) and the update
            # counter of the staleness measurement: both on ps, both in the checkpoint.
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self._staleness = Staleness(options.staleness_for(self._workers), self.optimizer)
        variables = [p for v in self.model.trainable_variables for p in shards(_tf_variable(v))]
        if not variables:
            raise ConfigError("Argument `model` has no trainable variables; build it (e.g. "
                              "call it once or give its input shape) in the model function.")
        self._trainable = arguments.check_variables(self.model, self.optimizer, options)
        # DynamicEmbedding layers (tfps.layers): tables on the ps tasks, rows updated by the
        # optimizer's rule after each step's gradient, evicted between closures.
        self._dynamic = DynamicTables(strategy=strategy, model=self.model,
                                      optimizer=self.optimizer, options=options,
                                      num_workers=self._workers, model_dir=model_dir)
        self._steps = StepFunctions(strategy=strategy, model=self.model, variables=variables,
                                    loss_fn=loss_fn, optimizer=self.optimizer,
                                    staleness=self._staleness, dedup=options.dedup_lookups,
                                    dynamic=self._dynamic if self._dynamic.active else None)
        # Every slot exists before a restore: restored into a ShardedVariable's container
        # first, slot values are silently dropped (docs/tensorflow-notes.md, "Sharded models
        # in SavedModels and resharded checkpoints").
        # Plain-number hyperparameters (learning rate, momentum, ...) become constants of the
        # closures: as variables on a ps each update would read them (docs/tensorflow-notes.md,
        # "Optimizer hyperparameters as variables"). A number set later is pinned again at the
        # next train(), with a new trace.
        _tf.pin_hyperparameters(self.optimizer)
        with strategy.scope():
            _tf.create_slots(self.optimizer, variables)
        self._closures = Closures(coordinator=self.coordinator, steps=self._steps,
                                  options=options,
                                  data=self.data,
                                  num_workers=self._workers)
        self._checkpoints = None
        if model_dir:
            self._checkpoints = Checkpoints(
                strategy=strategy, coordinator=self.coordinator,
                directory=layout.checkpoint_dir(model_dir),
                max_to_keep=options.max_to_keep, model=self.model, optimizer=self.optimizer,
                step=self.global_step, version=self._staleness.version,
                **feed.checkpoint_objects(self.data))  # a file input's ledger
        self._loop, self._health = driving.drive(
            options=options, model_dir=model_dir, closures=self._closures,
            coordinator=self.coordinator, num_workers=self._workers,
            measures_staleness=self._staleness.enabled, dynamic=self._dynamic,
            before_save_input=lambda step: feed.before_save(self.data),
            sync_model=self._sync_model, save=self._write_checkpoint,
            record_values=self._record_values, traffic=self.traffic)
        self.restored_step = self.restore()

    @staticmethod
    def _make_optimizer(optimizer, learning_rate):
        # Every setting carried over or refused by name, every value in range (a
        # `learning_rate` with an optimizer object is refused: set it on the optimizer).
        kwargs = {} if learning_rate is None else {"learning_rate": learning_rate}
        return optimizers.as_ps_optimizer(optimizer, **kwargs)

    @property
    def gradient_types(self) -> dict[str, str]:
        """Variable name -> ``"IndexedSlices"`` or the dense gradient's type, known once the
        training closure has been traced (to check that lookups stay sparse)."""
        return self._steps.gradient_types

    @property
    def version(self):
        """The update counter on ps that staleness is measured with (a variable)."""
        return self._staleness.version

    @property
    def steps_per_epoch(self) -> int | None:
        """Steps of one epoch of ``data`` (None with a ``dataset_fn``): ``train(E *
        steps_per_epoch)`` trains E epochs."""
        return feed.steps_per_epoch(self.data)

    @property
    def step(self) -> int:
        """Steps finished so far (restored ones included)."""
        return int(self.global_step.numpy())

    # ------------------------------------------------------------------------ training
    def train(self, train_steps: int) -> TrainResult:
        """Trains until the step count reaches `train_steps` (resuming from a checkpoint).

        Returns:
          A `TrainResult`. With a ``model_dir``, a checkpoint is written every
          ``options.checkpoint_every`` steps and at the end.
        """
        validate.integer("train_steps", train_steps, low=0, high=10**12)
        arguments.check_unchanged(self.model, self._trainable)  # `trainable` set later
        if self._schedule is not None:  # a rate that passes infinity within this run
            first = int(self.optimizer.iterations.numpy())
            check_run(self._schedule, first, first + max(0, train_steps - self.step))
        if _tf.pin_hyperparameters(self.optimizer):
            self._closures.retrace()
        with errors.surfaced():
            self._closures.prepare()
        if self._steps.fused is not None:
            self._steps.fused.from_model()  # the model's variables may have been set meanwhile
        self._dynamic.start(self.step)
        try:
            with errors.surfaced():
                # errors.surfaced: a ConfigError from traced user code, as itself
                return self._loop.run(self.step, train_steps)
        except Stopped as stopped:
            PREEMPTION.clear()
            where = self._checkpoints.latest if self._checkpoints else "no model_dir"
            print(f"tfps: {stopped.reason}: checkpoint {where} written at step "
                  f"{stopped.step}; exiting {exit_codes.PREEMPTED} to be requeued", flush=True)
            raise errors.Preempted(stopped.step, exit_codes.PREEMPTED) from None
        except tf.errors.OpError as error:  # a file input names the record at fault
            self._quiesce()
            explained = feed.explain(self.data, error)
            if explained is None:
                raise
            raise explained from None
        finally:
            self._sync_model()

    def _quiesce(self) -> None:
        """After a closure failed: waits for the closures still in flight and drops their
        errors (TF's coordinator keeps the next failure for the next `join` or `schedule`,
        which would be the next `train`'s, and its first closure would fail on an error of
        this one)."""
        for _ in range(2 * self._workers + 1):
            try:
                self.coordinator.join()
                return
            except tf.errors.OpError:
                continue

    def _record_values(self, step: int, rate: float, loss: float) -> dict:
        values = {}
        if self.batch_size:
            values["examples/sec"] = rate * self.batch_size
        values["loss"] = loss
        values["lr"] = self.current_learning_rate()
        values.update(self._dynamic.record_values(step))  # rows, admitted, evicted
        return values

    @property
    def traced_graph(self):
        """The graph of the training closure as last traced (None before `train`): what
        `traffic` counts; ``graph.as_graph_def()`` shows every op."""
        return self._closures.traced_graph

    def traffic(self) -> traffic.Traffic:
        """Per-step parameter traffic of the training closure as last traced: tensors and
        bytes between worker and ps, ops on ps, dataset fetches (`tfps.train.traffic`).
        Deterministic: it counts the graph, not the clock. Call after `train`."""
        return self._closures.traffic()

    def current_learning_rate(self) -> float:
        """The learning rate the optimizer applies at its current step: its schedule there,
        with a legacy ``decay`` (chief-side read, `tfps.train.optim_math.learning_rate`)."""
        return float(optim_math.learning_rate(self.optimizer, self.optimizer.iterations))

    # ------------------------------------------------------------------------ checkpoints
    def restore(self) -> int:
        """Restores the latest checkpoint under ``model_dir``, if any; returns its step."""
        path = self._checkpoints.restore() if self._checkpoints else None
        if path:
            log.info("tfps: restored %s (step %d)", path, self.step)
            feed.after_restore(self.data, self.step)  # a file input resumes inside its epoch
        return self.step

    def _sync_model(self) -> None:
        """Writes fused buffers into the model's own variables and slots (after a join)."""
        if self._steps.fused is not None:
            self.coordinator.join()
            self._steps.fused.to_model()

    def _write_checkpoint(self, step: int) -> str | None:
        """The step counter, then a checkpoint (no closure in flight, actions run)."""
        self.global_step.assign(step)
        if self._checkpoints is None:
            return None
        return self._checkpoints.save(step)

    def save(self) -> str | None:
        """Writes a checkpoint now (all scheduled closures are joined first)."""
        if self._checkpoints is None:
            return None
        self.coordinator.join()
        self._dynamic.evict(self.step)
        self._sync_model()
        return self._write_checkpoint(self.step)

    def export(self, path: str, *, serving_fn=None, input_signature=None,
               overwrite: bool = False, builder=None) -> str:
        """Writes the model as a SavedModel with un-sharded variables and a
        ``serving_default`` signature (`tfps.export.export_saved_model`); returns its path.

        Joins every scheduled closure first. The copy is built by `builder`, default the
        model function the Trainer was given (or Keras's `clone_model` for a Keras model
        given as an object). A Keras model is served on its inputs; a `tf.Module` needs
        ``serving_fn(model, inputs)`` and an `input_signature`, or a method name.
        """
        from tfps.export.saved_model import export_saved_model

        self.coordinator.join()
        self._sync_model()
        return export_saved_model(self.model, path, builder=builder or self._model_fn,
                                  serving_fn=serving_fn, input_signature=input_signature,
                                  overwrite=overwrite)

    # ------------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, Any]:
        """Evaluates on ``eval_dataset_fn``'s data, each batch exactly once.

        ``options.eval_shards`` closures, one per shard (`tfps.evaluation.ExactEvaluator`).
        Returns the summed ``eval_fn`` outputs, scalars divided by ``count`` when ``eval_fn``
        returns one.
        """
        eval_dataset_fn, eval_fn = self._eval
        self._sync_model()
        if eval_fn is None:
            raise ConfigError("evaluate() needs `eval_dataset_fn` and `eval_fn`. "
                              "Received: eval_fn=None")
        if self._evaluator is None:
            self._evaluator = ExactEvaluator(
                strategy=self.strategy, model=self.model, dataset_fn=eval_dataset_fn,
                eval_fn=eval_fn,
                num_shards=self.options.eval_shards or policy.eval_shards(self._workers))
        return self._evaluator()

    def summarize_eval(self, metrics: dict, step: int | None = None) -> str:
        """Prints an ``eval | step: ...`` record and writes it to TensorBoard (``eval/``)."""
        step = self.step if step is None else step
        reporter = ProgressReporter(step, self.model_dir, "off")
        scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        line = reporter.record("eval", step, scalars)
        reporter.close()
        return line

    def describe(self) -> str:
        """The variable-shard table: where every variable and shard of the model lives; then
        the rows, waiting ids and bytes of every DynamicEmbedding shard."""
        table = variable_table([_tf_variable(v) for v in self.model.trainable_variables])
        return table + ("\n" + self._dynamic.describe() if self._dynamic.active else "")

