"""tfps.keras: the Keras 3 binding checks (in subprocesses), the compile helpers, and a small
`fit` / exactly-once `evaluate` on an in-process cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, task_env


def _python(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = task_env()
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_keras3_bound_first_warns_on_import_tfps_and_tfps_keras_raises():
    """TensorFlow imported and `tf.keras` used (so bound to Keras 3) before tfps."""
    out = _python(
        "import tensorflow as tf\n"
        "tf.keras.layers.Dense  # binds tf.keras, here to Keras 3\n"
        "import tfps  # warns\n"
        "try:\n"
        "    import tfps.keras\n"
        "except ImportError as e:\n"
        "    print('RAISED', type(e).__name__, e)\n",
        TF_USE_LEGACY_KERAS=None)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "KerasBindingWarning: tf.keras in this process is Keras 3" in out.stderr
    assert ("RAISED KerasBindingError tf.keras in this process is Keras 3, which cannot train "
            "under ParameterServerStrategy. Set TF_USE_LEGACY_KERAS=1 before TensorFlow is "
            "first imported") in out.stdout


def test_tensorflow_imported_first_without_variable_warns_but_tfps_keras_works():
    """TensorFlow imported first, `tf.keras` untouched: attribute access still gets tf_keras,
    but `from tensorflow.keras import ...` statements would get Keras 3: warn, don't raise."""
    out = _python(
        "import tensorflow as tf\n"
        "import tfps, tfps.keras\n"
        "print('BOUND', tf.keras.layers.Dense.__module__)\n",
        TF_USE_LEGACY_KERAS=None)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set" in out.stderr
    assert "BOUND tf_keras." in out.stdout


def test_explicitly_disabled_legacy_keras_raises():
    out = _python("import tfps.keras", TF_USE_LEGACY_KERAS="0")
    assert out.returncode != 0
    assert "KerasBindingError" in out.stderr and "TF_USE_LEGACY_KERAS=1" in out.stderr


def test_import_tfps_is_lazy_and_keras_still_means_keras3():
    out = _python(
        "import sys, tfps\n"
        "assert 'tensorflow' not in sys.modules, 'import tfps loaded TensorFlow'\n"
        "assert tfps.keras.__name__ == 'tfps.keras'\n"
        "assert tfps.schedules.__name__ == 'tfps.schedules'\n"
        "from tfps import keras as tk, schedules\n"
        "import keras\n"
        "print('KERAS', keras.__version__, tk is tfps.keras)\n")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "KERAS 3." in out.stdout and "True" in out.stdout


# ------------------------------------------------------------------------------ helpers
import tfps  # noqa: E402  (after the subprocess tests' definitions; conftest set the env)
import tfps.keras  # noqa: E402
from tfps.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("steps, workers, want", [
    (200, 2, 25), (1000, 2, 100), (7, 4, 1), (100, 2, 10), (30, 1, 6), (97, 2, 1)],
    ids=["200x2", "capped-at-100", "tiny-epoch", "100x2", "30x1", "prime"])
def test_steps_per_execution(steps, workers, want):
    got = tfps.keras.steps_per_execution(steps, workers)
    assert got == want and steps % got == 0


def test_evaluation_shards_and_bad_arguments():
    assert tfps.keras.evaluation_shards(2) == 10
    assert tfps.keras.evaluation_shards(2, num_batches=4) == 4
    with pytest.raises(ConfigError, match=r"Argument `steps_per_epoch` must be an integer "
                                          r">= 1. Received: steps_per_epoch=0"):
        tfps.keras.steps_per_execution(0, 2)
    with pytest.raises(ConfigError, match=r"Received: dataset_fn=3"):
        tfps.keras.dataset_creator(3)


def test_is_evaluator_reads_tf_config():
    cluster = tfps.Cluster.local(num_ps=1, num_workers=1, evaluator=True)
    import json
    assert tfps.keras.is_evaluator({"TF_CONFIG": json.dumps(cluster.tf_config("evaluator"))})
    assert not tfps.keras.is_evaluator({"TF_CONFIG": json.dumps(cluster.tf_config("chief"))})
    assert not tfps.keras.is_evaluator({})


@pytest.fixture(scope="module")
def strategy():
    return tfps.keras.make_strategy(tfps.in_process_cluster(num_ps=1, num_workers=2))


def test_fit_checkpoints_progress_and_exact_evaluate(strategy, tmp_path, capsys):
    import numpy as np
    import tensorflow as tf
    import tf_keras

    rng = np.random.default_rng(1)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
        model.compile(tf_keras.optimizers.legacy.SGD(tfps.schedules.get(
                          "constant", initial_learning_rate=0.5, warmup_steps=5)),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], pss_evaluation_shards=4,
                      steps_per_execution=tfps.keras.steps_per_execution(20, strategy))
    history = tfps.keras.fit(
        model, lambda: tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32),
        epochs=3, steps_per_epoch=20, model_dir=str(tmp_path), checkpoint_epochs=2)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("fit |")]
    assert [l.split(" | ")[1:3] for l in lines] == [
        ["epoch: 1/3", "step: 20"], ["epoch: 2/3", "step: 40"], ["epoch: 3/3", "step: 60"]]
    assert "accuracy: " in lines[-1] and "steps/sec: " in lines[-1]
    assert len(history.history["loss"]) == 3
    # Every 2 epochs and after the last one: ckpt-2 and ckpt-3, not ckpt-1.
    saved = sorted(f for f in os.listdir(tmp_path / "checkpoints") if f.endswith(".index"))
    assert saved == ["ckpt-2.index", "ckpt-3.index"]

    evaluation = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)  # 8 batches >= 4 shards
    metrics = tfps.keras.evaluate(model, evaluation)
    assert metrics["accuracy"] > 0.9
    local = np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y)
    assert metrics["accuracy"] == pytest.approx(local, abs=1e-6)  # every example once
    with pytest.raises(ConfigError, match=r"at least as many batches as the model's "
                                          r"pss_evaluation_shards \(4\).*Received: data with "
                                          r"2 batches"):
        tfps.keras.evaluate(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(256))
    with pytest.raises(ConfigError, match="Received: verbose=1"):
        tfps.keras.fit(model, lambda: None, epochs=1, steps_per_epoch=1, verbose=1)
