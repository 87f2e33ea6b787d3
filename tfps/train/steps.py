"""What runs on a worker: one replica step, and the per-step closure that packs several.

One replica step (Orbit's ``train_step``): read the staleness counter, run the loss under a
`tf.GradientTape` (the model's reads pull dense variables from their ps; embedding lookups pull
only their rows), take gradients per shard (`IndexedSlices` stay sparse all the way to the ps),
and push one update. The per-step closure (`PerStepClosure`, the `PerStep` mode) runs
`num_steps` of them in a `tf.range` loop: one `ClusterCoordinator.schedule` for many steps.

The closures do not advance the step counter: the chief counts each closure once, when its
result arrives (`tfps.train.loop`), because TF's coordinator may run a closure twice after a
worker failure (docs/tensorflow-notes.md, "At-least-once closures").
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable

from tfps import _tf
from tfps.train import kernels, optim_math
from tfps.train.params import FusedDense, dedup_lookups
from tfps.train.staleness import Staleness

tf = _tf.require()

__all__ = ["PerStepClosure", "StepFunctions", "closure_function", "user_function"]


def closure_function(fn):
    """`fn` as a `tf.function` without AutoGraph: tfps's closures are written with explicit
    `tf.while_loop`s, and converting their code again at every trace costs a third of the
    first trace (0.6 s of 1.8 s for the recsys closure, docs/performance.md). The user's code
    inside them keeps AutoGraph (`user_function`)."""
    return tf.function(fn, autograph=False)


def user_function(fn):
    """A user's function (a loss, a model function) converted by AutoGraph, as `tf.function`
    would have: its Python control flow on tensors works inside tfps's closures."""
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return tf.autograph.to_graph(fn)
    return fn


class StepFunctions:
    """The replica step and the per-step closure of a model whose variables live on ps tasks.

    Args:
      strategy: the ParameterServerStrategy.
      model: passed to `loss_fn`.
      variables: the TF variables to train, one entry per shard of a sharded variable.
      loss_fn: ``loss_fn(model, batch) -> scalar loss``.
      optimizer: a tf_keras legacy optimizer (it places its slots beside each shard).
      staleness: the `Staleness` counter.
      dedup: gather each distinct embedding id once per lookup (`tfps.train.params`).
      dynamic: the model's `DynamicEmbedding` tables (`tfps.train.dynamic`), or None: their
        lookups record their rows on each step's tape, and the rows are updated after it.
    """

    def __init__(self, *, strategy, model, variables: list, loss_fn: Callable, optimizer,
                 staleness: Staleness, dedup: bool = False, dynamic=None):
        self.strategy, self.model, self.variables = strategy, model, variables
        self.optimizer, self.staleness = optimizer, staleness
        self.loss_fn = user_function(loss_fn)
        self.dedup = dedup
        self.dynamic = dynamic
        self.fused: FusedDense | None = None  # set by `fuse`
        self.dense: list = []  # the variables with dense gradients, once probed
        self.lookup_bounds: dict = {}  # variable ref -> most ids per batch (None: unknown)
        # Variable name -> "IndexedSlices" / the dense gradient's type, filled at trace time.
        self.gradient_types: dict[str, str] = {}
        # The optimizer's kernels, run by tfps (rows de-duplicated on the worker, the step
        # count advanced once per closure), or None: its own apply_gradients (DynamicEmbedding
        # rows keep a clock per step; clipping and other optimizers are the optimizer's).
        self.kernels = None if dynamic is not None else kernels.rule_or_none(optimizer)

    # ------------------------------------------------------------------------ parameters
    def probe(self, element_spec) -> None:
        """Sets `dense` (the variables whose gradient is dense, not `IndexedSlices`) and
        `lookup_bounds` (variable -> most ids one batch looks up in it) from one trace of the
        loss on a batch of `element_spec` (on the chief; nothing runs)."""
        bounds: dict = {}

        def record(var, original, indices):
            bound = _static_size(indices)
            bounds[var.ref()] = None if bound is None or bounds.get(var.ref(), 0) is None \
                else bounds.get(var.ref(), 0) + bound
            return original(indices)

        def probe(batch):
            with tf.GradientTape() as tape, _tf.intercept_sparse_reads(self.variables, record), \
                    self.row_scope(tape):
                loss = self.loss_fn(self.model, batch)
            grads = tape.gradient(loss, self.variables)
            self.dense = [v for v, g in zip(self.variables, grads)
                          if g is not None and not isinstance(g, tf.IndexedSlices)]
            return loss

        tf.function(probe).get_concrete_function(element_spec)
        self.lookup_bounds = bounds

    def fuse(self, variables: list) -> None:
        """Carries `variables` (dense) in one buffer per ps from now on."""
        fused = FusedDense(self.strategy, variables, self.optimizer)
        self.fused = fused if fused.groups else None

    # ------------------------------------------------------------------------ on a replica
    def replica_gradients(self, batch):
        """``(loss, gradients, counter read)`` of one batch; nothing is applied yet. One
        gradient per variable (a fused variable's is taken with respect to its slice of the
        buffer read, which the model's reads return)."""
        read_version = self.staleness.read()
        with tf.control_dependencies(Staleness.before_reads(read_version)), \
                tf.GradientTape() as tape, dedup_lookups(self.variables, self.dedup), \
                self.row_scope(tape) as rows:
            slices = {}
            if self.fused is not None:  # inside the closure's cache_variable_reads scope
                _, slices = self.fused.read()
                tape.watch(list(slices.values()))
                self.fused.install(slices)
            loss = tf.cast(self.loss_fn(self.model, batch), tf.float32)
        targets = [slices.get(v.ref(), v) for v in self.variables]
        sources = [] if rows is None else rows.sources  # DynamicEmbedding rows
        grads, row_grads = tape.gradient(loss, (targets, sources))  # IndexedSlices stay sparse
        if rows is not None:
            rows.push(row_grads)  # each touched row's optimizer update, on its ps
        self.gradient_types = {v.name: type(g).__name__ for v, g in zip(self.variables, grads)}
        return loss, grads, read_version

    def apply(self, grads, read_version, step=None):
        """Pushes `grads` (None entries skipped; a fused variable's travel in its buffer's
        one flat gradient); returns the update's staleness τ. With `step` (the update's count,
        a tensor) and `kernels`, the optimizer's kernels run at that step and the caller
        advances ``optimizer.iterations``; otherwise the optimizer's `apply_gradients`."""
        fused = set() if self.fused is None else {v.ref() for v in self.fused.variables}
        pairs = [(g, v) for g, v in zip(grads, self.variables)
                 if g is not None and v.ref() not in fused]
        if fused:
            by_var = {v.ref(): g for g, v in zip(grads, self.variables) if v.ref() in fused}
            pairs += list(zip(self.fused.gradients_from_vars(by_var), self.fused.buffers))
        if step is None or self.kernels is None:
            update = lambda: self.optimizer.apply_gradients(pairs)  # noqa: E731
        else:
            update = lambda: self._run_kernels(pairs, step)  # noqa: E731
        return self.staleness.count([g for g, _ in pairs], read_version, update)

    def _run_kernels(self, pairs, step):
        """The optimizer's kernels on each variable's ps. Rows are de-duplicated here, on the
        worker, as the optimizer would on the ps before its sparse kernel."""
        rule, updates = self.kernels, []
        for g, var in pairs:
            slots = [s.handle for s in optim_math.slots_of(self.optimizer, rule.rule, var)]
            if isinstance(g, tf.IndexedSlices) and _distinct(g.indices):
                # The rows of one de-duplicated lookup (`dedup_lookups`): distinct already,
                # and on the ps already (the gather's ids).
                updates.append(rule.sparse(var.handle, slots, g.values, g.indices, step,
                                           var.dtype))
            elif isinstance(g, tf.IndexedSlices):
                rows, index = tf.unique(g.indices)
                summed = tf.math.unsorted_segment_sum(g.values, index, tf.size(rows))
                updates.append(rule.sparse(var.handle, slots, summed, rows, step, var.dtype))
            else:
                updates.append(rule.dense(var.handle, slots, g, step))
        return tf.group(updates)

    def row_scope(self, tape):
        """The step scope of `DynamicEmbedding` lookups (yields their recorder), or a no-op
        that yields None."""
        if self.dynamic is None:
            return contextlib.nullcontext()
        return self.dynamic.scope(tape)

    def reads_scope(self):
        """The closure-wide scope fused reads need (`cache_variable_reads`), or a no-op."""
        if self.fused is None:
            return contextlib.nullcontext()
        return _tf.cache_variable_reads(self.variables)

    def replica_step(self, batch, step=None):
        """One whole step: ``(loss, τ)`` (`step`: see `apply`)."""
        loss, grads, read_version = self.replica_gradients(batch)
        return loss, self.apply(grads, read_version, step)


def _distinct(indices) -> bool:
    """Whether `indices` are known distinct at trace time: the ids of one de-duplicated
    lookup (a `tf.unique` output, maybe reshaped on the way to the gradient)."""
    tensor = indices
    while tensor.op.type in ("Reshape", "Identity"):
        tensor = tensor.op.inputs[0]
    return tensor.op.type == "Unique" and tensor.value_index == 0


class PerStepClosure:
    """The `PerStep` mode: `num_steps` steps, each one pull -> gradient -> push.

    `fn(feed_args, num_steps)` returns ``(mean loss, τs)``; `num_steps` is a tensor, so
    closures of any length share one trace; the batches come from `data`
    (`tfps.data.feed.ClosureInput`).
    """

    needs_probe = False

    def __init__(self, steps: StepFunctions, data):
        self.steps, self.data = steps, data
        self.traced_graph = None  # the FuncGraph of the last trace (`tfps.train.traffic`)
        self.fn = closure_function(self._closure)

    def prepare(self) -> None:
        pass

    def retrace(self) -> None:
        self.fn = closure_function(self._closure)

    def args(self, feed_args, num_steps: int) -> tuple:
        return feed_args, tf.constant(num_steps, tf.int32)

    def shape(self, num_steps: int) -> tuple[int, int]:
        return num_steps, num_steps

    def _closure(self, feed_args, num_steps):
        steps = self.steps
        self.traced_graph = tf.compat.v1.get_default_graph()
        total = tf.constant(0.0)
        taus = tf.TensorArray(tf.int64, size=num_steps)
        iterations = steps.optimizer.iterations
        with steps.reads_scope():
            batch_at = self.data.batches(feed_args, num_steps)
            step0 = None
            if steps.kernels is not None:  # read only if an update depends on it
                step0 = (iterations.read_value() if steps.kernels.uses_step else
                         tf.constant(0, tf.int64))

            def body(i, total, taus):
                step = None if step0 is None else step0 + tf.cast(i, tf.int64)
                loss, tau = steps.strategy.run(steps.replica_step, args=(batch_at(i), step))
                return i + 1, total + loss, taus.write(i, tau)

            _, total, taus = tf.while_loop(lambda i, *_: i < num_steps, body,
                                           (tf.constant(0), total, taus))
            if step0 is not None:  # one count for the closure's updates
                iterations.assign_add(tf.cast(num_steps, tf.int64))
        return total / tf.cast(num_steps, tf.float32), taus.stack()


def _static_size(tensor) -> int | None:
    """The number of elements of `tensor`, or an upper bound read through the ops a sharded
    lookup routes its ids with (a partition or a de-duplication holds at most its input)."""
    while not tensor.shape.is_fully_defined():
        if tensor.op.type not in ("DynamicPartition", "Unique", "Reshape", "Identity", "Cast"):
            return None
        tensor = tensor.op.inputs[0]
    return tensor.shape.num_elements()
