"""A chief for the Keras reliability drills: `tfps.keras.fit` of a small classifier, with a
pause on the chief after every epoch so that a drill can act while the job runs.

``python keras_fit_job.py MODEL_DIR EPOCHS STEPS_PER_EPOCH PAUSE_S``

Prints tfps.keras's ``fit | epoch: ...`` lines, then ``result: steps=<int> start_step=<int>``:
`steps` is the optimizer's step count at the end (EPOCHS x STEPS_PER_EPOCH when every step
counted once), `start_step` the step `BackupAndRestore` resumed from (0 on a fresh start).
"""

import sys
import time

import tensorflow as tf
import tf_keras

import tfps  # tfps-launch set TF_USE_LEGACY_KERAS: tf_keras is tf.keras here
import tfps.keras


class _Pause(tf_keras.callbacks.Callback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.start_step = 0

    def on_train_begin(self, logs=None):  # after BackupAndRestore's restore
        self.start_step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


def main(model_dir: str, epochs: int, steps_per_epoch: int, pause: float) -> None:
    strategy = tfps.keras.make_strategy()
    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.Input((8,)), tf_keras.layers.Dense(16, "relu"),
                                     tf_keras.layers.Dense(2)])
        model.compile(tf_keras.optimizers.legacy.Adam(0.01),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      steps_per_execution=tfps.keras.steps_per_execution(steps_per_epoch,
                                                                         strategy))

    def data():
        x = tf.random.stateless_normal([1024, 8], seed=[1, 2])
        return tf.data.Dataset.from_tensor_slices((x, tf.cast(x[:, 0] > 0, tf.int64))
                                                  ).repeat().batch(32)

    pause_cb = _Pause(pause)
    tfps.keras.fit(model, data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                   model_dir=model_dir, callbacks=[pause_cb])
    print(f"result: steps={int(model.optimizer.iterations.numpy())} "
          f"start_step={pause_cb.start_step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
