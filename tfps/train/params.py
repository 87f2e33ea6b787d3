"""How a closure reads and writes the model's parameters: de-duplicated lookups and fused
dense parameters, two levers that cut parameter traffic without changing the arithmetic.

* **De-duplicated lookups** (``TrainerOptions(dedup_lookups=True)``): every embedding lookup
  on a ps variable gathers each distinct id once (``tf.unique``, then a local gather), so a
  batch whose ids repeat (power-law traffic) pulls each row once; its gradient is then the
  `IndexedSlices` of the distinct rows, pushed once each.
* **Fused dense parameters** (``TrainerOptions(fuse_dense=True)``): the dense (non-embedding)
  variables of each ps travel as one buffer on that ps: one read and one update per step
  instead of one per variable (the tensor-fusion idea of Horovod and BytePS, ps-lite's key
  ranges). While training, the buffers hold the truth; the model's own variables (and their
  optimizer slots) are written from them at every checkpoint, at the end of `train`, and
  before an evaluation, so checkpoints keep the model's variable names and restore into an
  unfused Trainer, and back.

Which variables are dense is read from the gradients of one trace of the loss: a variable with
an `IndexedSlices` gradient is an embedding and is never fused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from tfps import _tf

tf = _tf.require()

__all__ = ["FusedDense", "dedup_lookups"]


def _dedup_read(var, original, indices):
    """``original(unique ids)``, then each id's row gathered locally."""
    flat = tf.reshape(indices, [-1])
    unique, position = tf.unique(flat)
    rows = original(unique)
    gathered = tf.gather(rows, position)
    shape = indices.shape.concatenate(var.shape[1:])
    if shape.is_fully_defined():
        return tf.reshape(gathered, shape)
    return tf.reshape(gathered, tf.concat([tf.shape(indices), tf.shape(rows)[1:]], 0))


@contextlib.contextmanager
def dedup_lookups(variables: Sequence, enabled: bool = True):
    """While tracing inside the block, lookups on `variables` gather distinct ids only."""
    if not enabled:
        yield
        return
    with _tf.intercept_sparse_reads(variables, _dedup_read):
        yield


class _Group:
    """The dense variables of one ps and the buffer that carries them."""

    def __init__(self, device: str):
        self.device = device
        self.variables: list = []
        self.buffer = None

    @property
    def sizes(self) -> list[int]:
        return [v.shape.num_elements() for v in self.variables]


class FusedDense:
    """One buffer variable per ps for the dense variables that live there.

    Create under nothing in particular: it enters the strategy's scope itself.

    Args:
      strategy: the ParameterServerStrategy.
      variables: the dense variables to fuse (shards of nothing: whole variables).
      optimizer: the tf_keras legacy optimizer; it gets slots for the buffers.
    """

    def __init__(self, strategy, variables: Sequence, optimizer):
        self._strategy, self._optimizer = strategy, optimizer
        groups: dict[tuple, _Group] = {}
        for var in variables:
            key = (var.device, var.dtype)
            groups.setdefault(key, _Group(var.device))
            groups[key].variables.append(var)
        self.groups = [g for g in groups.values() if len(g.variables) > 1]
        self.variables = [v for g in self.groups for v in g.variables]
        with strategy.scope():
            for i, group in enumerate(self.groups):
                # Colocated: a variable partitioner never shards the buffer (it must stay
                # one read and one update on its ps).
                with strategy.extended.colocate_vars_with(group.variables[0]):
                    group.buffer = tf.Variable(self._concat(group.variables),
                                               trainable=False, name=f"fused_dense_{i}")
            _tf.create_slots(optimizer, self.buffers)

    @property
    def buffers(self) -> list:
        return [g.buffer for g in self.groups]

    @staticmethod
    def _concat(tensors) -> tf.Tensor:
        return tf.concat([tf.reshape(tf.convert_to_tensor(t), [-1]) for t in tensors], 0)

    # ------------------------------------------------------------------ inside a closure
    def read(self) -> tuple[list, dict]:
        """Reads each buffer once; returns (the buffer reads, var -> its slice of them).

        Install the slices with `install` inside a `cache_variable_reads` scope so that the
        model's reads of its dense variables return them; take gradients with respect to the
        buffer reads (one flat gradient per buffer)."""
        reads, slices = [], {}
        for group in self.groups:
            value = group.buffer.read_value()
            reads.append(value)
            for var, part in zip(group.variables, tf.split(value, group.sizes)):
                slices[var.ref()] = tf.reshape(part, var.shape)
        return reads, slices

    def install(self, slices: dict) -> None:
        for var in self.variables:
            _tf.fill_read_cache(var, slices[var.ref()])

    def gradients_from_vars(self, grads_by_var: dict) -> list:
        """One flat gradient per buffer from per-variable dense gradients (zeros where a
        variable got none)."""
        out = []
        for group in self.groups:
            parts = [grads_by_var.get(v.ref()) for v in group.variables]
            out.append(self._concat([tf.zeros(v.shape, v.dtype) if g is None else g
                                     for g, v in zip(parts, group.variables)]))
        return out

    # ------------------------------------------------------------------ on the chief
    def _pairs(self):
        names = self._optimizer.get_slot_names()
        for group in self.groups:
            slots = [(self._optimizer.get_slot(group.buffer, n),
                      [self._optimizer.get_slot(v, n) for v in group.variables]) for n in names]
            yield group, [(group.buffer, group.variables), *slots]

    def to_model(self) -> None:
        """Writes each buffer (and its optimizer slots) into the model's own variables."""
        for group, pairs in self._pairs():
            for fused, targets in pairs:
                for var, part in zip(targets, tf.split(fused.read_value(), group.sizes)):
                    var.assign(tf.reshape(part, var.shape))

    def from_model(self) -> None:
        """Loads each buffer (and its slots) from the model's variables (after a restore)."""
        for _group, pairs in self._pairs():
            for fused, sources in pairs:
                fused.assign(self._concat([v.read_value() for v in sources]))
