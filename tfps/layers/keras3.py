"""`DynamicEmbedding` for Keras 3 models (``import keras``), trained by `tfps.Trainer`.

The same layer as `tfps.layers.DynamicEmbedding` (same arguments, storage, admission,
eviction, concurrency and checkpoints; see its docstring), as a ``keras.layers.Layer``:

>>> import keras, tfps
>>> from tfps.layers import keras3
>>> def build():                                    # called by the Trainer, under its strategy
...     ids = keras.Input([2], dtype="string")
...     emb = keras3.DynamicEmbedding(16, key_dtype="string", min_count=3)(ids)
...     return keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(emb)))
"""

from __future__ import annotations

import keras

from tfps import _tf
from tfps.layers.dynamic_embedding import TableLayer

_tf.require()

__all__ = ["DynamicEmbedding"]


class DynamicEmbedding(TableLayer, keras.layers.Layer):
    """Keras 3 twin of `tfps.layers.DynamicEmbedding` (see there)."""

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.table_config.dim,)

    def compute_output_spec(self, ids, training=None):
        # Keras 3 infers shapes with this instead of running `call` (no table needed).
        return keras.KerasTensor(tuple(ids.shape) + (self.table_config.dim,), dtype="float32")

