"""K micro-batches against one pull of the dense variables: accumulation and stale reads.

* **Accumulation** (`tfps.train.modes.Accumulate`, `AccumulationClosure`): one push of the mean
  gradient.
* **Bounded-staleness reads** (`tfps.train.modes.StaleReads`, `StaleReadsClosure`; Stale
  Synchronous Parallel, Ho et al., NIPS 2013): a push after every micro-batch, but the dense
  variables are read once every S steps; the staleness each update sees (its own S-1 and other
  workers' updates) is measured as for every update.

Under `cache_variable_reads` a dense variable is read from ps once, at its first use, and the
local copy serves every later read in the scope (TF's `CachingVariable`; tf_keras's exact
evaluation uses the same scope). Embedding lookups (``sparse_read``) bypass the cache and fetch
only their rows. The first micro-batch runs on its own: it fills the caches and shows which
variables have one. The other K-1 run in a `tf.while_loop`, so trace time does not grow with
K; each takes its gradient with respect to the local copies (the loop body's captures of the
cached tensors, which the model's reads resolve to) and the loop sums them. The update applies
the mean. docs/tensorflow-notes.md ("Read cache") has the details of the cache.
"""

from __future__ import annotations

from tfps import _tf
from tfps.train.params import dedup_lookups
from tfps.train.steps import StepFunctions, closure_function

tf = _tf.require()

__all__ = ["AccumulationClosure", "StaleReadsClosure"]


class AccumulationClosure:
    """The `Accumulate` mode's closure (`tfps.train.closures.ModeClosure`): K micro-batches,
    one push of their mean gradient. `fn(feed_args, k)`; `k` is a Python int; the batches
    come from `data` (`tfps.data.feed.ClosureInput`)."""

    push_each = False
    needs_probe = False

    def __init__(self, steps: StepFunctions, data):
        self.steps, self.data = steps, data
        self.fn = closure_function(self._closure)
        self.traced_graph = None  # the FuncGraph of the last trace (`tfps.train.traffic`)

    def prepare(self) -> None:
        pass

    def retrace(self) -> None:
        self.fn = closure_function(self._closure)

    def args(self, feed_args, num_steps: int) -> tuple:
        return feed_args, num_steps

    def shape(self, num_steps: int) -> tuple[int, int]:
        return num_steps, num_steps - 1  # the first micro-batch runs before the loop

    def _closure(self, feed_args, k: int):
        """K micro-batches, one update. `k` is a Python int: a short last closure (fewer steps
        left than accumulate_steps) is one more trace, and the step count stays exact."""
        steps = self.steps
        self.traced_graph = tf.compat.v1.get_default_graph()
        with _tf.cache_variable_reads(steps.variables):
            micro_batch = self.data.batches(feed_args, k)
            loss, grads, read_version = steps.strategy.run(
                steps.replica_gradients, args=(micro_batch(0),))
            cached = [_tf.cached_read(var) for var in steps.variables]
            grads = [None if g is None else tf.convert_to_tensor(g) if c is not None else g
                     for g, c in zip(grads, cached)]  # a local copy's gradient is dense
            if self.push_each:
                first = steps.strategy.run(steps.apply, args=(grads, read_version))
                loss, taus = self._stale(micro_batch, k - 1, loss, grads, cached, read_version,
                                         first)
                return loss / k, taus
            if k > 1:
                loss, grads = self._more(micro_batch, k - 1, loss, grads, cached)
            tau = steps.strategy.run(self._apply_mean, args=(grads, k, read_version))
        return loss / k, tf.reshape(tau, [1])

    def _one(self, batch, live, copies, cached):
        """One micro-batch against the local copies (the loop body's captures of `cached`):
        its loss, the gradients of the `live` variables and those of the `copies`."""
        steps = self.steps
        local = [_tf.capture(cached[i]) for i in copies]  # the loop body's placeholders
        with tf.GradientTape() as tape, dedup_lookups(steps.variables, steps.dedup):
            tape.watch(local)
            step_loss = tf.cast(steps.loss_fn(steps.model, batch), tf.float32)
        by_var, by_copy = tape.gradient(step_loss, ([steps.variables[i] for i in live], local))
        return step_loss, by_var, dict(zip(copies, by_copy))

    def _stale(self, micro_batch, n: int, loss, grads, cached, read_version, first_tau):
        """Micro-batches 1..n, each pushed at once, all reading the dense copies of batch 0.
        Returns the summed loss and the τ of every push."""
        steps = self.steps
        live = [i for i, g in enumerate(grads) if g is not None]
        copies = [i for i in live if cached[i] is not None]

        def body(step, total, taus):
            # After the previous push: the lookups of this micro-batch read its rows (the
            # loop counter carries the push's control dependency).
            with tf.control_dependencies([step]):
                step_loss, by_var, by_copy = steps.strategy.run(
                    self._one, args=(micro_batch(step + 1), live, copies, cached))
            full = [None] * len(steps.variables)
            for i, g in zip(live, by_var):
                parts = [x for x in (by_copy.get(i), g) if x is not None]
                full[i] = (None if not parts else parts[0] if len(parts) == 1 else
                           tf.add_n([tf.convert_to_tensor(x) for x in parts]))
            tau = steps.strategy.run(steps.apply, args=(full, read_version))
            with tf.control_dependencies([tau]):
                following = step + 1
            return following, total + step_loss, taus.write(step + 1, tau)

        taus = tf.TensorArray(tf.int64, size=n + 1).write(0, first_tau)
        with tf.control_dependencies([first_tau]):
            start = tf.constant(0)
        _, loss, taus = tf.while_loop(lambda step, *_: step < n, body, (start, loss, taus))
        return loss, taus.stack()

    def _more(self, micro_batch, n: int, loss, grads, cached):
        """Runs micro-batches ``micro_batch(1)`` .. ``micro_batch(n)`` in a while loop; returns
        the summed loss and gradients (a sparse one as the IndexedSlices of all their rows)."""
        steps = self.steps
        live = [i for i, g in enumerate(grads) if g is not None]  # variables with a gradient
        copies = [i for i in live if cached[i] is not None]       # ... and a local copy
        copied = set(copies)

        def one(batch):
            return self._one(batch, live, copies, cached)

        def add(i, acc, g, g_copy):
            if i in copied:  # a local copy: its gradient, plus any sparse reads'
                extra = [tf.convert_to_tensor(x) for x in (g_copy, g) if x is not None]
                return tf.add_n([acc, *extra]) if extra else acc
            if g is None:
                return acc
            if isinstance(acc, tuple):  # a sparse gradient: concatenate the rows
                if not isinstance(g, tf.IndexedSlices):
                    raise TypeError(f"tfps: the gradient of {steps.variables[i].name} was "
                                    f"sparse for the first micro-batch and dense for the next")
                return tf.concat([acc[0], g.indices], 0), tf.concat([acc[1], g.values], 0)
            return acc + tf.convert_to_tensor(g)

        def body(step, total, accs):
            step_loss, by_var, by_copy = steps.strategy.run(one, args=(micro_batch(step + 1),))
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
        mean = [None if g is None else
                tf.IndexedSlices(g.values / k, g.indices, g.dense_shape)
                if isinstance(g, tf.IndexedSlices) else g / k for g in grads]
        return self.steps.apply(mean, read_version)


class StaleReadsClosure(AccumulationClosure):
    """The `StaleReads` mode's closure: S micro-batches against one read of the dense
    variables, each pushed at once."""

    push_each = True
