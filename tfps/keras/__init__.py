"""Keras `Model.fit` on parameter servers: tf_keras under ParameterServerStrategy, made plain.

Only tf_keras (Keras 2, `TF_USE_LEGACY_KERAS=1`) can `fit` under ParameterServerStrategy;
Keras 3 cannot (keras-team/keras#18624). Importing this module raises
`tfps.errors.KerasBindingError` when `tf.keras` in this process is already Keras 3, with what
to do. `import tfps` (or `tfps-launch`) sets the variable before TensorFlow reads it.

What the helpers take care of:

* `make_strategy`: the strategy from the environment (TF_CONFIG or Slurm), checked for tf_keras.
* `dataset_creator`: wraps a dataset function in the `DatasetCreator` that `fit` needs under
  PSS, sharding it per worker.
* `steps_per_execution`, `evaluation_shards`: the two `compile` settings that matter under PSS
  (steps per scheduled closure; exactly-once evaluation shards, ``pss_evaluation_shards``).
* `fit`: `Model.fit` with `BackupAndRestore` and checkpoints under ``model_dir`` and a
  `ProgressLogger` line per epoch (PSS refuses ``verbose=1``, the progress bar).
* `evaluate`: exactly-once `Model.evaluate`, with the shard count checked up front.
* `export`: the trained model as a SavedModel with un-sharded variables (`tfps.export`).
* `run_sidecar_evaluator`, `is_evaluator`: the side-car evaluator task (``tfps-launch
  --evaluator``), on tf_keras's `SidecarEvaluator`.

Example (on an in-process cluster; under `tfps-launch` call ``make_strategy()``)::

    import tfps, tfps.keras, tf_keras, tensorflow as tf

    strategy = tfps.keras.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=2))
    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.Input((8,)), tf_keras.layers.Dense(4)])
        model.compile(tf_keras.optimizers.legacy.Adam(0.01),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"],
                      steps_per_execution=tfps.keras.steps_per_execution(100, strategy))

    def data():                     # runs on every worker, sharded per worker
        x = tf.random.stateless_normal([1024, 8], seed=[1, 2])
        y = tf.argmax(x[:, :4], axis=1)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32)

    tfps.keras.fit(model, data, epochs=3, steps_per_epoch=100, model_dir="/tmp/run")
    # fit | epoch: 1/3 | step: 100 | steps/sec: 310.5 | loss: 0.6931 | accuracy: 0.7812
    tfps.keras.export(model, "/tmp/run/export/1")   # tf.saved_model.load-able anywhere

This package is ``tfps.keras`` (`fit`, `callbacks`, `sidecar`); inside tfps, ``import keras``
still means Keras 3 (absolute imports). Do not run files of ``tfps/`` as scripts.
"""

from tfps import _env

_env.require_tf_keras()

from tfps.keras.callbacks import (  # noqa: E402
    BACKUP_SUBDIR,
    CHECKPOINT_SUBDIR,
    EpochCheckpoint,
    ProgressLogger,
    default_callbacks,
)
from tfps.keras.fit import (  # noqa: E402
    create_slots,
    dataset_creator,
    evaluate,
    evaluation_shards,
    fit,
    make_strategy,
    num_workers,
    steps_per_execution,
)
from tfps.keras.saving import export  # noqa: E402
from tfps.keras.sidecar import is_evaluator, run_sidecar_evaluator  # noqa: E402

__all__ = [
    "BACKUP_SUBDIR",
    "CHECKPOINT_SUBDIR",
    "EpochCheckpoint",
    "ProgressLogger",
    "create_slots",
    "dataset_creator",
    "default_callbacks",
    "evaluate",
    "evaluation_shards",
    "export",
    "fit",
    "is_evaluator",
    "make_strategy",
    "num_workers",
    "run_sidecar_evaluator",
    "steps_per_execution",
]
