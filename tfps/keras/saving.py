"""`tfps.keras.export`: a tf_keras model trained by `fit` on ps tasks, as a plain SavedModel.

The model's variables live on the ps tasks, big ones sharded; the export is an un-sharded
copy with a ``serving_default`` signature built from the model's inputs, written atomically
(`tfps.export.export_saved_model`). Call it on the chief after `fit`::

    tfps.keras.fit(model, data, epochs=3, steps_per_epoch=100, model_dir="/tmp/run")
    tfps.keras.export(model, "/models/classifier/1")

    # anywhere, plain TensorFlow (no tfps, no cluster):
    serve = tf.saved_model.load("/models/classifier/1").signatures["serving_default"]
"""

from __future__ import annotations

from collections.abc import Callable

import tf_keras

from tfps import validate

__all__ = ["export"]


def export(model, path, *, overwrite: bool = False, builder: Callable | None = None,
           serving_fn: Callable | str | None = None, input_signature=None) -> str:
    """Writes a tf_keras `model` as a SavedModel with un-sharded variables; returns its path.

    Args:
      model: a tf_keras model (trained by `tfps.keras.fit` under ParameterServerStrategy).
      path: the SavedModel's directory (for TF Serving, a version directory ``.../1``).
      overwrite: replace a SavedModel already at `path` (never anything else).
      builder: a zero-argument function building the same model; default `clone_model`
        (required for a subclassed model).
      serving_fn: what serves; default the model on its inputs (see
        `tfps.export.export_saved_model`).
      input_signature: the serving function's inputs, with `serving_fn` (see
        `tfps.export.export_saved_model`).

    Raises:
      tfps.errors.ConfigError: `model` is not a tf_keras model, or a bad `path` (see
        `tfps.export.export_saved_model`); nothing is written.
    """
    if not isinstance(model, tf_keras.Model):
        raise validate.fail("model", model, "a tf_keras model (Keras 3 models train with "
                            "tfps.Trainer: use trainer.export)")
    from tfps.export.saved_model import export_saved_model

    return export_saved_model(model, path, builder=builder, serving_fn=serving_fn,
                              input_signature=input_signature, overwrite=overwrite)
