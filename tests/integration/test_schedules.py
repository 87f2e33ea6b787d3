"""tfps.schedules against NumPy references, config round trips, and both Keras optimizers."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from conftest import REPO, task_env

from tfps import schedules
from tfps.errors import ConfigError

W = 10  # warm-up steps of every case
DS = 100  # decay steps

# name -> (arguments, NumPy reference of the schedule after warm-up at s >= 0 steps, end step)
CASES = {
    "constant": (dict(initial_learning_rate=0.5), lambda s: 0.5, DS),
    "exponential": (dict(initial_learning_rate=0.5, decay_steps=DS, decay_rate=0.1),
                    lambda s: 0.5 * 0.1 ** (s / DS), DS),
    "piecewise": (dict(boundaries=[30, 60], values=[0.5, 0.2, 0.05]),
                  lambda s: [0.5, 0.2, 0.05][int(np.searchsorted([30, 60], s, side="left"))], 60),
    "polynomial": (dict(initial_learning_rate=0.5, decay_steps=DS, end_learning_rate=0.01,
                        power=2.0),
                   lambda s: (0.5 - 0.01) * (1 - min(s, DS) / DS) ** 2 + 0.01, DS),
    "cosine": (dict(initial_learning_rate=0.5, decay_steps=DS, alpha=0.1),
               lambda s: 0.5 * ((1 - 0.1) * 0.5 * (1 + math.cos(math.pi * min(s, DS) / DS)) + 0.1),
               DS),
    "inverse_sqrt": (dict(initial_learning_rate=0.5),  # decay_steps defaults to warmup_steps
                     lambda s: 0.5 * math.sqrt(W / (W + s)), DS),
}


def reference(name: str, step: int, num_workers: int = 1) -> float:
    kwargs, after, _ = CASES[name]
    peak = kwargs.get("initial_learning_rate", kwargs.get("values", [None])[0])
    lr = peak * step / W if step < W else after(step - W)
    return num_workers * lr


def make(name: str, **extra) -> schedules.Schedule:
    return schedules.get(name, warmup_steps=W, **CASES[name][0], **extra)


def edge_steps(name: str) -> dict[str, int]:
    end = W + CASES[name][2]
    return {"zero": 0, "mid_warmup": W // 2, "end_of_warmup": W, "middle": (W + end) // 2,
            "end": end, "beyond_end": end + 3 * DS}


@pytest.mark.parametrize("name", schedules.NAMES)
def test_matches_numpy_reference_at_edge_steps(name):
    lr = make(name)
    for label, step in edge_steps(name).items():
        got = float(lr(step))
        assert got == pytest.approx(reference(name, step), rel=1e-5, abs=1e-7), (label, step)
    assert float(lr(0)) == 0.0  # warm-up starts from 0
    assert float(lr(W)) == pytest.approx(0.5)  # ... and reaches the initial value


@pytest.mark.parametrize("name", schedules.NAMES)
def test_works_inside_tf_function_with_int64_step(name):
    lr = make(name)
    steps = tf.constant([0, 5, 10, 40, 200], tf.int64)
    got = tf.function(lambda s: tf.map_fn(lr, s, fn_output_signature=tf.float32))(steps)
    np.testing.assert_allclose(got.numpy(), [reference(name, int(s)) for s in steps],
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", schedules.NAMES)
def test_config_round_trip(name):
    lr = make(name, num_workers=3)
    config = lr.get_config()
    assert config["schedule"] == name and config["warmup_steps"] == W
    again = schedules.get(json.loads(json.dumps(config)))  # configs are plain JSON
    assert again.get_config() == config
    assert schedules.Schedule.from_config(config).get_config() == config
    for step in edge_steps(name).values():
        assert float(again(step)) == pytest.approx(float(lr(step)))
    # Keras's serialised form too (what an optimizer's get_config holds).
    keras_form = tf_keras.optimizers.schedules.serialize(lr)
    assert keras_form["registered_name"] == "tfps>Schedule"
    assert schedules.get(keras_form).get_config() == config


@pytest.mark.parametrize("name", schedules.NAMES)
def test_linear_scaling_rule_multiplies_every_value(name):
    lr = make(name, num_workers=4)
    for step in edge_steps(name).values():
        assert float(lr(step)) == pytest.approx(reference(name, step, num_workers=4), rel=1e-5)


def _sgd_step_size(optimizer, step: int, variable, ones) -> float:
    """Applies a gradient of 1 at iteration `step`; with plain SGD the move is the lr."""
    optimizer.iterations.assign(step)
    before = float(variable.numpy()[0])
    optimizer.apply_gradients([(ones, variable)])
    return before - float(variable.numpy()[0])


@pytest.mark.parametrize("name", schedules.NAMES)
def test_tf_keras_and_keras3_optimizers_accept_it(name):
    import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says

    assert keras.__version__.startswith("3.")
    lr = make(name)
    step = edge_steps(name)["middle"]
    want = reference(name, step)
    for optimizer in (tf_keras.optimizers.SGD(learning_rate=lr),
                      tf_keras.optimizers.legacy.SGD(learning_rate=lr)):
        got = _sgd_step_size(optimizer, step, tf.Variable([1.0]), tf.ones([1]))
        assert got == pytest.approx(want, rel=1e-4), type(optimizer)
    k3 = keras.optimizers.SGD(learning_rate=lr)
    assert isinstance(lr, keras.optimizers.schedules.LearningRateSchedule)
    got = _sgd_step_size(k3, step, keras.Variable([1.0]), keras.ops.ones([1]))
    assert got == pytest.approx(want, rel=1e-4)
    # Both optimizers' configs name the schedule and restore it.
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(k3))
    assert restored.get_config()["learning_rate"]["config"] == lr.get_config()
    restored = tf_keras.optimizers.deserialize(
        tf_keras.optimizers.serialize(tf_keras.optimizers.SGD(learning_rate=lr)))
    assert float(restored._learning_rate(step)) == pytest.approx(want, rel=1e-5)


def test_keras3_is_not_imported_and_later_import_still_works():
    """Schedules built before `import keras` work with Keras 3 optimizers afterwards, and a
    process that never imports Keras 3 does not pay for it."""
    code = (
        "import sys\n"
        "from tfps import schedules\n"
        "lr = schedules.get('cosine', initial_learning_rate=0.1, decay_steps=10, "
        "warmup_steps=2)\n"
        "float(lr(3))\n"
        "assert 'keras' not in sys.modules, 'Keras 3 was imported'\n"
        "import keras\n"
        "opt = keras.optimizers.Adam(learning_rate=lr)\n"
        "print('lr', float(opt.learning_rate))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=task_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "lr 0.0" in out.stdout  # iterations == 0: the start of the warm-up


def test_pickle_and_deepcopy():
    import copy
    import pickle

    lr = make("cosine")
    for clone in (copy.deepcopy(lr), pickle.loads(pickle.dumps(lr))):
        assert clone.get_config() == lr.get_config()
        assert float(clone(40)) == pytest.approx(float(lr(40)))


def test_number_identifier_is_a_constant():
    lr = schedules.get(0.25, warmup_steps=4)
    assert lr.name == "constant"
    assert [float(lr(s)) for s in (0, 2, 4, 1000)] == [0.0, 0.125, 0.25, 0.25]


@pytest.mark.parametrize("args, message", [
    (("linear",), "Argument `schedule` must be one of constant, exponential, piecewise, "
                  "polynomial, cosine, inverse_sqrt. Received: schedule='linear'"),
    (("cosine", dict(initial_learning_rate=0.1, decay_steps=10, warmup_steps=-5)),
     "Argument `warmup_steps` must be an integer >= 0. Received: warmup_steps=-5"),
    (("cosine", dict(initial_learning_rate=0.1, decay_steps=-10)),
     "Argument `decay_steps` must be a positive integer. Received: decay_steps=-10"),
    (("exponential", dict(initial_learning_rate=0.1, decay_steps=0, decay_rate=0.5)),
     "Argument `decay_steps` must be a positive integer. Received: decay_steps=0"),
    (("piecewise", dict(boundaries=[10, 20], values=[0.1, 0.01])),
     "Argument `values` must have one more element than `boundaries` (2 boundaries need 3 "
     "values). Received: values=[0.1, 0.01], boundaries=[10, 20]"),
    (("piecewise", dict(boundaries=[20, 10], values=[0.1, 0.01, 0.001])),
     "Argument `boundaries` must be strictly increasing. Received: boundaries=[20, 10]"),
    (("cosine", dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5)),
     "Argument `decay_rate` is not accepted by schedule 'cosine'"),
    (("cosine", dict(initial_learning_rate=0.1)),
     "Argument `decay_steps` is required by schedule 'cosine'"),
    (("constant", dict(initial_learning_rate=-1.0)),
     "Argument `initial_learning_rate` must be a finite number >= 0. "
     "Received: initial_learning_rate=-1.0"),
    (("constant", dict(initial_learning_rate=0.1, num_workers=0)),
     "Argument `num_workers` must be a positive integer. Received: num_workers=0"),
    (("inverse_sqrt", dict(initial_learning_rate=0.1)),
     "Argument `decay_steps` is required by schedule 'inverse_sqrt' when warmup_steps=0"),
    (({"initial_learning_rate": 0.1},), "must be a config dict with a 'schedule' key"),
    (([0.1],), "Argument `identifier` must be a schedule name"),
], ids=["unknown-name", "negative-warmup", "negative-decay-steps", "zero-decay-steps",
        "boundaries-values-length", "boundaries-order", "unknown-argument",
        "missing-argument", "negative-rate", "zero-workers", "inverse-sqrt-no-steps",
        "dict-without-kind", "bad-identifier-type"])
def test_bad_arguments_raise_config_error(args, message):
    identifier, kwargs = args[0], (args[1] if len(args) > 1 else {})
    with pytest.raises(ConfigError) as info:
        schedules.get(identifier, **kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # TfpsError is a ValueError
