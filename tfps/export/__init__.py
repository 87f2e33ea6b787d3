"""From a model on ps tasks to serving: a plain SavedModel with un-sharded variables.

A SavedModel holding `ShardedVariable`s does not load back with `tf.saved_model.load`
(tensorflow#60560), and serving systems want one plain variable per tensor. An export here is
an un-sharded copy of the model (built outside the strategy, each variable the concatenation
of its shards), with a ``serving_default`` signature built from the model's inputs (or a
serving function), written beside its path and renamed into place, so that a crash never
leaves half a SavedModel there.

* `export_saved_model(model, path, ...)`: any model (tf_keras, Keras 3, `tf.Module`);
  `tfps.Trainer.export` and `tfps.keras.export` call it for their models;
* ``python -m tfps.export --model_dir D --model FILE.py:BUILDER --out PATH``: the same from
  the latest checkpoint under ``D``, in a process with no cluster (`tfps.export.cli`);
* `unsharded`, `signature`, `paths`: the copy, the serving signature, the atomic write.

Example (an in-process cluster; on a real cluster the chief does this after training)::

    import tfps, tensorflow as tf
    strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1))
    with strategy.scope():
        model = build()                      # its big embedding is sharded over the ps
    ...                                      # train
    tfps.export_saved_model(model, "/models/recsys/1")
    # anywhere, plain TensorFlow:
    tf.saved_model.load("/models/recsys/1").signatures["serving_default"](...)

Importing this package does not import TensorFlow: the names load on first use.
"""

_LAZY = {
    "export_saved_model": "tfps.export.saved_model",
    "unsharded_copy": "tfps.export.unsharded",
    "serving_function": "tfps.export.signature",
    "is_saved_model": "tfps.export.paths",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfps.export' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
