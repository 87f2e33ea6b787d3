"""Local steps: H steps on worker-local copies of the parameters, then one push of the
difference (local SGD; DiLoCo, Douillard et al. 2023): one pull and one push per H steps.

A closure of H steps:

1. **pull** the dense parameters (one read per fused buffer or unfused variable) and their
   optimizer slots into worker-local copies, one per-worker variable per model variable;
2. **find the rows**: run the model's input side over the H batches with every embedding
   lookup recording its ids and returning zeros (nothing else is kept, so nothing else runs);
   one `tf.unique` over all of them gives the closure's distinct rows of each table shard and
   each lookup's positions among them, computed once for the closure. The distinct rows and
   their slot rows are pulled once into a worker-local row cache;
3. **train locally**: H steps in a `tf.while_loop` with the model's own step on the local
   copies: its dense reads are reads of the copies, its lookups gathers from the row cache at
   the positions found in 2, and the optimizer's update runs as its own fused kernels, in
   place (`tfps.train.kernels`);
4. **push** the difference: dense parameters through the outer optimizer (``w += η Δ``, or
   Nesterov momentum ``m = μ m + Δ; w += η (μ m + Δ)`` with ``outer_momentum``), slots and rows
   by addition, the step count by H.

With one worker (η = 1) this is the inner optimizer's own trajectory (H = 1: per-step
training). With several, each worker's H steps start from the parameters as they were at its
pull and the pushes add up (asynchronous, like the rest of PSS). The dense parameters'
differences are scaled by η, by default 1 / the number of workers, so that together the pushes
move them by the average of the workers' progress, as DiLoCo's synchronous outer step does;
embedding rows are added whole: the workers' batches mostly touch different rows, and a row's
progress is then one worker's alone (docs/performance.md, "Local steps and stale pushes",
has the measurements). Rows of Adam's moments are updated "lazily": only the rows a step
touches.

Worker-local state is `per_worker_variable`s. TF's automatic control dependencies do not see
them (a new placeholder per handle access, ps_values.py `PerWorkerVariable`), so each handle is
captured once per trace and every access is ordered by hand: after the loop counter of its step,
and the next step's counter after every update.
"""

from __future__ import annotations

from tfps import _tf
from tfps.errors import ConfigError
from tfps.train import optim_math
from tfps.train.kernels import FusedRule
from tfps.train.steps import StepFunctions, closure_function

tf = _tf.require()

__all__ = ["LocalStepsClosure"]

OUTER_MOMENTUM_SLOT = "outer_momentum"
# Tables of at most this many rows find a closure's distinct ids with a map of one int32 per
# row (a count per row, then their running sum): ~10 ms for 2M ids over 100k rows, against
# ~145 ms for `tf.unique`'s hash map (2026-12-06, docs/performance.md). Larger tables, whose
# map would cost more memory than it saves time, use `tf.unique`.
_DENSE_MAP_ROWS = 1 << 22


class LocalStepsClosure:
    """The `LocalSteps` mode's closure (`tfps.train.closures.ModeClosure`).

    Args:
      steps: the step functions (model, variables, optimizer, fused buffers).
      data: the closures' input (`tfps.data.feed.ClosureInput`).
      local_steps: h, steps per closure (sizes the row caches).
      outer_learning_rate: η of the outer update.
      outer_momentum: μ of its Nesterov momentum (0: none); kept as an optimizer slot
        (``outer_momentum``), so checkpoints carry it.
      transfer_dtype: the type pulls and pushes travel in (``"float32"`` or
        ``"bfloat16"``); the casts run on each side, the ps keeps float32.
    """

    needs_probe = True

    def __init__(self, steps: StepFunctions, data, local_steps: int,
                 outer_learning_rate: float = 1.0, outer_momentum: float = 0.0,
                 transfer_dtype: str = "float32"):
        self.steps, self.data = steps, data
        self.wire = tf.as_dtype(transfer_dtype)
        self.local_steps = local_steps
        self.kernels = FusedRule(steps.optimizer)
        self.outer_lr, self.outer_momentum = outer_learning_rate, outer_momentum
        self.fn = closure_function(self._closure)
        self.traced_graph = None
        self.copies: dict = {}  # dense variable ref -> [local copy, local slot copies...]
        self.caches: dict = {}  # sparse variable ref -> [row cache, slot row caches...]

    def retrace(self) -> None:
        self.fn = closure_function(self._closure)

    def args(self, feed_args, num_steps: int) -> tuple:
        return feed_args, tf.constant(num_steps, tf.int32)  # one trace for any length

    def shape(self, num_steps: int) -> tuple[int, int]:
        return num_steps, num_steps

    def prepare(self) -> None:
        """Creates the outer momentum slots, the local copies and the row caches (after the
        probe and the fusing of dense variables)."""
        steps, slots = self.steps, len(self.kernels.slot_names)
        if self.kernels.rule.name == "Adam" and self._sparse():
            # tf_keras's Adam moves every row it has seen at every step (its moments decay,
            # docs/settings.md); worker-local rows hold only those a closure touches.
            raise ConfigError(
                f"Argument `optimizer` must not be Adam with local steps on a model with "
                f"embedding lookups ({', '.join(v.name for v in self._sparse())}): Adam moves "
                f"the rows a closure does not touch, which worker-local rows cannot; use "
                f"Adagrad or SGD, or PerStep. Received: optimizer=Adam, "
                f"local_steps={self.local_steps}")
        with steps.strategy.scope():
            if self.outer_momentum:
                for target in self._targets():
                    steps.optimizer.add_slot(target, OUTER_MOMENTUM_SLOT, "zeros")
            for var in steps.dense:
                self.copies[var.ref()] = [
                    tf.Variable(tf.zeros(var.shape, var.dtype), per_worker_variable=True,
                                trainable=False) for _ in range(1 + slots)]
            for var in self._sparse():
                bound = steps.lookup_bounds.get(var.ref())
                if bound is None:
                    raise ConfigError(
                        f"Argument `local_steps` needs to know how many ids a batch looks up "
                        f"in {var.name} (a lookup of static size): its ids pass through ops "
                        f"tfps cannot bound. Received: local_steps={self.local_steps}")
                capacity = max(1, min(self.local_steps * bound, var.shape[0]))
                self.caches[var.ref()] = [
                    tf.Variable(tf.zeros([capacity, *var.shape[1:]], var.dtype),
                                per_worker_variable=True, trainable=False)
                    for _ in range(1 + slots)]

    # ------------------------------------------------------------------ what moves
    def _targets(self) -> list:
        """What is pulled and pushed for the dense parameters: buffers and unfused ones."""
        fused = self.steps.fused
        carried = set() if fused is None else {v.ref() for v in fused.variables}
        return ([] if fused is None else fused.buffers) + \
            [v for v in self.steps.dense if v.ref() not in carried]

    def _carried(self, target) -> list:
        """The model variables `target` carries (a buffer's, or itself)."""
        fused = self.steps.fused
        for group in [] if fused is None else fused.groups:
            if group.buffer.ref() == target.ref():
                return group.variables
        return [target]

    def _sparse(self) -> list:
        dense = {v.ref() for v in self.steps.dense}
        return [v for v in self.steps.variables if v.ref() not in dense]

    def _slots(self, var) -> list:
        return optim_math.slots_of(self.steps.optimizer, self.kernels.rule, var)

    # ------------------------------------------------------------------ the closure
    def _closure(self, feed_args, n):
        steps = self.steps
        self.traced_graph = tf.compat.v1.get_default_graph()
        targets, sparse = self._targets(), self._sparse()
        # Each per-worker variable's handle, captured once (see the module docstring).
        copies = {ref: [c.handle for c in cs] for ref, cs in self.copies.items()}
        caches = {ref: [c.handle for c in cs] for ref, cs in self.caches.items()}
        with _tf.cache_variable_reads(steps.variables):
            batch_at = self.data.batches(feed_args, n, replay=True)
            version0 = steps.staleness.read()
            with tf.control_dependencies(steps.staleness.before_reads(version0)):
                step0 = steps.optimizer.iterations.read_value()
            pulled = [[self._from_ps(t.device, x.read_value) for x in (t, *self._slots(t))]
                      for t in targets]
            loads = self._load_copies(targets, pulled, copies)
            found = self._discover(batch_at, n, sparse)
            rows0 = [[self._from_ps(v.device, lambda x=x, u=u: x.sparse_read(u))
                      for x in (v, *self._slots(v))] for v, (u, _, _) in zip(sparse, found)]
            for v, (u, _, _), rows in zip(sparse, found, rows0):
                loads += [tf.raw_ops.ResourceScatterUpdate(
                    resource=h, indices=tf.range(tf.size(u)), updates=r)
                    for h, r in zip(caches[v.ref()], rows)]
            with tf.control_dependencies(loads):
                start = tf.constant(0)
            lookups = {v.ref(): f for v, f in zip(sparse, found)}

            def body(i, total):
                with tf.control_dependencies([i]):
                    loss, updates = self._local_step(batch_at(i), i, step0, copies, caches,
                                                     lookups)
                with tf.control_dependencies(updates):
                    return i + 1, total + loss

            end, total = tf.while_loop(lambda i, _: i < n, body, (start, tf.constant(0.0)))
            with tf.control_dependencies([end]):
                trained = [[tf.raw_ops.ReadVariableOp(resource=h, dtype=v.dtype)
                            for h in copies[v.ref()]] for v in steps.dense]
                trained_rows = [[tf.raw_ops.ResourceGather(
                    resource=h, indices=tf.range(tf.size(u)), dtype=v.dtype)
                    for h in caches[v.ref()]] for v, (u, _, _) in zip(sparse, found)]
            tau, scale = self._staleness(version0, [trained, trained_rows])
            self._push(targets, pulled, trained, scale)
            self._push_rows(sparse, found, rows0, trained_rows)
            steps.optimizer.iterations.assign_add(tf.cast(n, tf.int64))
        return total / tf.cast(n, tf.float32), tf.reshape(tau, [1])

    def _load_copies(self, targets, pulled, copies) -> list:
        """Writes each pulled target (and its slots) into the local copies of the model
        variables it carries; the model's reads of those variables return the pulled values
        until the training loop (the pass that finds the rows reads nothing from ps)."""
        loads = []
        for target, values in zip(targets, pulled):
            carried = self._carried(target)
            for k, value in enumerate(values):
                parts = [value] if len(carried) == 1 and carried[0] is target else \
                    tf.split(value, [v.shape.num_elements() for v in carried])
                for var, part in zip(carried, parts):
                    part = tf.reshape(part, var.shape)
                    if k == 0:
                        _tf.fill_read_cache(var, part)
                    loads.append(tf.raw_ops.AssignVariableOp(
                        resource=copies[var.ref()][k], value=part))
        return loads

    def _local_step(self, batch, i, step0, copies, caches, lookups):
        """One step of the model on the local copies; returns (loss, the updates)."""
        steps, kernels = self.steps, self.kernels
        dense = steps.dense
        gathered = {}  # sparse variable ref -> [(positions, rows)] of this step's lookups
        taken = {}     # sparse variable ref -> ids looked up so far in this step

        def read(var, original, indices):
            return self._cached_read(var, indices, i, caches, lookups, gathered, taken, tape)

        sparse = self._sparse()
        with tf.GradientTape() as tape, _tf.intercept_sparse_reads(sparse, read):
            values = [tf.raw_ops.ReadVariableOp(resource=copies[v.ref()][0], dtype=v.dtype)
                      for v in dense]
            tape.watch(values)
            for var, value in zip(dense, values):
                _tf.fill_read_cache(var, value)
            loss = tf.cast(steps.loss_fn(steps.model, batch), tf.float32)
        keys = list(gathered)
        g_values, g_rows = tape.gradient(
            loss, (values, [[rows for _, rows in gathered[k]] for k in keys]))
        step = step0 + tf.cast(i, tf.int64)
        updates = [kernels.dense(copies[v.ref()][0], copies[v.ref()][1:], g, step)
                   for v, g in zip(dense, g_values) if g is not None]
        for key, grads in zip(keys, g_rows):
            positions = tf.concat([p for p, _ in gathered[key]], 0)
            rows, index = tf.unique(positions)  # each row once, as the optimizer does
            summed = tf.math.unsorted_segment_sum(
                tf.concat([tf.convert_to_tensor(g) for g in grads], 0), index, tf.size(rows))
            dtype = next(v.dtype for v in sparse if v.ref() == key)
            updates.append(kernels.sparse(caches[key][0], caches[key][1:], summed, rows,
                                          step, dtype))
        return loss, updates

    def _cached_read(self, var, indices, i, caches, lookups, gathered, taken, tape):
        """A lookup answered from the row cache, at the positions the closure found for this
        step's ids (in lookup order). Records the gathered rows for their gradient."""
        _, positions, offsets = lookups[var.ref()]
        size = tf.size(indices)
        first = offsets[i] + taken.get(var.ref(), 0)
        taken[var.ref()] = taken.get(var.ref(), 0) + size
        where = tf.slice(positions, [first], [size])
        rows = tf.raw_ops.ResourceGather(resource=caches[var.ref()][0], indices=where,
                                         dtype=var.dtype)
        tape.watch(rows)
        gathered.setdefault(var.ref(), []).append((where, rows))
        shape = indices.shape.concatenate(var.shape[1:])
        if shape.is_fully_defined():
            return tf.reshape(rows, shape)
        return tf.reshape(rows, tf.concat([tf.shape(indices), tf.shape(rows)[1:]], 0))

    def _discover(self, batch_at, n, sparse: list) -> list:
        """Per sparse variable: ``(distinct ids, each id's position among them, offsets)``:
        the positions of step i start at ``offsets[i]``, in the order its lookups ran."""
        if not sparse:
            return []
        recorded = {}  # not annotated: AutoGraph cannot convert a closure over an annotated name

        def record(var, original, indices):
            recorded.setdefault(var.ref(), []).append(tf.cast(tf.reshape(indices, [-1]),
                                                              tf.int64))
            return tf.zeros(tf.concat([tf.shape(indices), var.shape[1:]], 0), var.dtype)

        def body(i, ids, sizes):
            recorded.clear()
            with _tf.intercept_sparse_reads(sparse, record):
                self.steps.loss_fn(self.steps.model, batch_at(i))  # only the ids are used
            step_ids = [tf.concat(recorded.get(v.ref(), [tf.zeros([0], tf.int64)]), 0)
                        for v in sparse]
            return (i + 1, [a.write(i, t) for a, t in zip(ids, step_ids)],
                    [a.write(i, tf.size(t)) for a, t in zip(sizes, step_ids)])

        ids = [tf.TensorArray(tf.int64, size=n, infer_shape=False) for _ in sparse]
        sizes = [tf.TensorArray(tf.int32, size=n) for _ in sparse]
        _, ids, sizes = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), ids, sizes))
        found = []
        for var, a, lengths in zip(sparse, ids, sizes):
            distinct, positions = _distinct_rows(a.concat(), int(var.shape[0]))
            offsets = tf.concat([[0], tf.cumsum(lengths.stack())], 0)
            found.append((distinct, positions, offsets))
        return found

    def _staleness(self, version0, computed):
        """(τ, the push's scale): τ pushes of others since the pull (staleness scaling on),
        else (0, the outer learning rate)."""
        staleness = self.steps.staleness
        if not staleness.enabled:
            return tf.constant(0, tf.int64), self.outer_lr
        with tf.control_dependencies(tf.nest.flatten(computed)):
            tau = staleness.version.assign_add(1, read_value=True) - 1 - version0
        return tau, self.outer_lr / (1.0 + tf.cast(tau, tf.float32))

    def _from_ps(self, device: str, read):
        """``read()`` (ops on a ps), narrowed to the transfer type there and widened here."""
        value = read()
        if self.wire == tf.float32 or value.dtype != tf.float32:
            return value
        with tf.device(device):
            narrow = tf.cast(value, self.wire)
        return tf.cast(narrow, tf.float32)

    def _to_ps(self, device: str, value):
        """`value` as the ps on `device` uses it: narrowed here, widened there."""
        if self.wire == tf.float32 or value.dtype != tf.float32:
            return value
        narrow = tf.cast(value, self.wire)
        with tf.device(device):
            return tf.cast(narrow, tf.float32)

    def _push(self, targets, pulled, trained, scale) -> None:
        """Parameters move by ``scale`` x their difference (through the outer momentum);
        slots by their whole difference (the squared gradients seen are all real)."""
        optimizer = self.steps.optimizer
        exact = isinstance(scale, float) and scale == 1.0
        local = dict(zip([v.ref() for v in self.steps.dense], trained))
        for target, before in zip(targets, pulled):
            carried = self._carried(target)
            after = [tf.concat([tf.reshape(local[v.ref()][k], [-1]) for v in carried], 0)
                     if len(carried) > 1 or carried[0] is not target else local[target.ref()][k]
                     for k in range(len(before))]
            delta = after[0] - before[0]
            if self.outer_momentum:
                sent = self._to_ps(target.device, delta)
                with tf.device(target.device):
                    m = optimizer.get_slot(target, OUTER_MOMENTUM_SLOT)
                    m_new = m.assign(self.outer_momentum * m + sent, read_value=True)
                    target.assign_add(scale * (self.outer_momentum * m_new + sent))
            else:
                target.assign_add(self._to_ps(target.device,
                                              delta if exact else scale * delta))
            for slot, a0, a in zip(self._slots(target), before[1:], after[1:]):
                slot.assign_add(self._to_ps(target.device, a - a0))

    def _push_rows(self, sparse, found, rows0, trained) -> None:
        """Rows (and slot rows) move by their whole difference (see the module docstring)."""
        for var, (u, _, _), before, after in zip(sparse, found, rows0, trained):
            for x, a0, a in zip((var, *self._slots(var)), before, after):
                x.scatter_add(tf.IndexedSlices(self._to_ps(var.device, a - a0), u))


def _distinct_rows(ids, rows: int):
    """``(the distinct ids, sorted for a table of `rows` rows or as `tf.unique` orders them;
    each id's position among them)`` of a closure's lookups."""
    if rows > _DENSE_MAP_ROWS:
        return tf.unique(ids, out_idx=tf.int32)
    counts = tf.math.bincount(tf.cast(ids, tf.int32), minlength=rows, maxlength=rows)
    seen = tf.cast(counts > 0, tf.int32)
    position = tf.cumsum(seen, exclusive=True)  # each seen row's place among the seen ones
    distinct = tf.cast(tf.where(seen > 0)[:, 0], ids.dtype)
    return distinct, tf.gather(position, ids)
