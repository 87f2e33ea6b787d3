"""Layers for models on parameter servers: `DynamicEmbedding`, an embedding with no fixed
vocabulary whose rows live in hash tables on the ps tasks (admission, eviction, per-row
optimizer state, checkpoints that reshard, serving export).

* `DynamicEmbedding`: the tf_keras layer (``tf.keras`` under tfps); `tfps.layers.keras3`
  has the Keras 3 one (``from tfps.layers.keras3 import DynamicEmbedding``);
* `TableConfig`: its validated settings (pure Python);
* `watch_rows`: the step scope a custom training loop needs (`tfps.Trainer` enters it);
* `serving_tables`, `copy_tables`: serving copies of trained tables (`tfps.layers.serving`).

Importing this package does not import TensorFlow: the names load on first use.

>>> import tfps
>>> tfps.layers.TableConfig(dim=8, min_count=3).min_count
3
"""

_LAZY = {
    "DynamicEmbedding": "tfps.layers.dynamic_embedding",
    "TableConfig": "tfps.layers.config",
    "tables_of": "tfps.layers.dynamic_embedding",
    "watch_rows": "tfps.layers.gradients",
    "copy_tables": "tfps.layers.serving",
    "serving_lookup": "tfps.layers.serving",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "keras3":
        return importlib.import_module("tfps.layers.keras3")
    raise AttributeError(f"module 'tfps.layers' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"keras3"})
