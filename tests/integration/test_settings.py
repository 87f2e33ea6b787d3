"""Every setting means what it says (issue 25), on a real in-process cluster (2 ps, 1 worker).

* Training does what it was asked: the optimizer's settings (legacy ``decay``, momentum and
  Nesterov, Adagrad's initial accumulator, Adam's betas and epsilon, gradient clipping) apply
  to every kind of variable the Trainer trains -- dense (fused buffers), a sharded embedding
  on two ps (its rows in every batch, or skipping steps), `DynamicEmbedding` rows, the local
  copies of `LocalSteps`, `Accumulate`'s mean gradients -- each checked against a one-process
  reference: the same tf_keras model and legacy optimizer trained with a plain
  `GradientTape` and `apply_gradients`, no cluster. With one worker every mode here is the
  optimizer's own trajectory, so the two must agree to float32 rounding.
* A frozen `DynamicEmbedding` (``trainable=False``) keeps its rows and admits nothing; a
  ``trainable`` set after the Trainer was built is refused, not ignored.
* A setting the Trainer cannot honour is refused by name: a Keras 3 optimizer setting with no
  legacy counterpart, clipping in local steps, a variable constraint, a layer dtype the table
  does not use.
* What used to fail late now fails where it enters, in one line naming the argument.
* ``python -m tfps.export`` with a corrupt checkpoint: exit 2, one line, no TF start-up line.

The checks that need no TensorFlow are in tests/unit/test_api_hostile.py.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, task_env

import tfps
from tfps.errors import ConfigError
from tfps.train.modes import Accumulate, LocalSteps, PerStep

IDS_PER_ROW, ROWS, NUM_IDS, STEPS = 4, 4, 16, 12
BIG = 40_000  # x 4 floats = 640 KB: two shards on two ps tasks
ATOL = 2e-5


@pytest.fixture(scope="module")
def strategy():
    return tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1))


# ------------------------------------------------------------------ data and models
def _batches(partial=False):
    """STEPS batches; every batch holds every id of 0..NUM_IDS-1 once (every row gets a
    gradient at every step), or with `partial` ids drawn from 0..63 (rows skip steps)."""
    rng = np.random.default_rng(7)
    if partial:
        ids = rng.integers(0, 64, size=(STEPS, ROWS, IDS_PER_ROW))
    else:
        ids = np.stack([rng.permutation(NUM_IDS).reshape(ROWS, IDS_PER_ROW)
                        for _ in range(STEPS)])
    y = rng.normal(size=(STEPS, ROWS)).astype(np.float32)
    return ids.astype(np.int64), y


def _dataset(ctx=None, partial=False):
    import tensorflow as tf
    ids, y = _batches(partial)
    return tf.data.Dataset.from_tensor_slices((ids, y)).repeat()


def _build(dynamic=True, frozen=False, sharded=True, deep=False, reference=False):
    """ids -> [big sharded Embedding | DynamicEmbedding] -> (deep: 2 x Dense(8)) -> Dense(1).
    The `reference` (one process) has a plain Embedding of NUM_IDS zero rows where the
    DynamicEmbedding is (ids are 0..NUM_IDS-1, each admitted at first sight with zeros)."""
    import tensorflow as tf
    ids = tf.keras.Input([IDS_PER_ROW], dtype=tf.int64)
    parts = []
    if sharded:
        parts.append(tf.keras.layers.Flatten()(tf.keras.layers.Embedding(
            BIG, 4, name="big")(ids)))
    if dynamic:
        table = (tf.keras.layers.Embedding(NUM_IDS, 4, embeddings_initializer="zeros",
                                           name="dyn") if reference else
                 tfps.layers.DynamicEmbedding(4, initializer="zeros", name="dyn",
                                              trainable=not frozen))
        parts.append(tf.keras.layers.Flatten()(table(ids)))
    h = parts[0] if len(parts) == 1 else tf.keras.layers.Concatenate()(parts)
    if deep:  # dense variables enough for several on one ps: fused buffers
        h = tf.keras.layers.Dense(8, name="mid2")(tf.keras.layers.Dense(8, name="mid")(h))
    return tf.keras.Model(ids, tf.keras.layers.Dense(1, name="head")(h))


def _loss(model, batch):
    import tensorflow as tf
    ids, y = batch
    return tf.reduce_mean(tf.square(model(ids, training=True)[:, 0] - y))


def _value(var):
    import tensorflow as tf
    return tf.concat([s.read_value() for s in tfps.strategy.shards(var)], 0).numpy()


def _key(var) -> str:
    """``big/embeddings/part_0:0`` and ``big/embeddings:0`` -> ``big/embeddings``."""
    parts = var.name.split(":")[0].rpartition("/part_")[0] or var.name.split(":")[0]
    parts = parts.split("/")
    return f"{parts[0]}/{parts[-1]}"


def _weights(model) -> dict:
    """Name -> value; tf_keras lists a ShardedVariable's parts one by one, in order."""
    parts: dict = {}
    for v in model.trainable_variables:
        parts.setdefault(_key(v), []).append(_value(v))
    return {k: np.concatenate(v, 0) for k, v in parts.items()}


def _rows(model):
    import tensorflow as tf
    [tables] = tfps.layers.tables_of(model)
    return tables.lookup(tf.range(NUM_IDS, dtype=tf.int64)).numpy()


def _reference(optimizer, initial: dict, steps=STEPS, partial=False, mode=None, **build):
    """The same model (`_build(**build)`) and optimizer in one process, no cluster, trained
    with a GradientTape and `apply_gradients`: returns its weights. With ``mode=Accumulate(k)``
    it applies the mean gradient of each k batches, all taken at the same weights."""
    import tensorflow as tf
    model = _build(reference=True, **build)
    for v in model.trainable_variables:
        if _key(v) in initial:
            v.assign(initial[_key(v)])
    opt = type(optimizer).from_config(optimizer.get_config())
    all_ids, all_y = _batches(partial)
    group = mode.steps if isinstance(mode, Accumulate) else 1
    for start in range(0, steps, group):
        total = None
        for i in range(start, min(start + group, steps)):
            with tf.GradientTape() as tape:
                loss = _loss(model, (tf.constant(all_ids[i % STEPS]),
                                     tf.constant(all_y[i % STEPS])))
            grads = tape.gradient(loss, model.trainable_variables)  # lookups: IndexedSlices
            if isinstance(mode, Accumulate):
                total = grads if total is None else [_add(a, g) for a, g in zip(total, grads)]
                continue
            opt.apply_gradients(zip(grads, model.trainable_variables))
        if total is not None:
            n = min(start + group, steps) - start
            opt.apply_gradients(zip([_scale(t, 1 / n) for t in total],
                                    model.trainable_variables))
    return {_key(v): v.numpy() for v in model.trainable_variables}


def _add(a, b):
    """Two gradients summed, IndexedSlices kept sparse (a sparse update stays sparse)."""
    import tensorflow as tf
    if isinstance(a, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return a + b


def _scale(g, factor):
    import tensorflow as tf
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * factor, g.indices, g.dense_shape)
    return g * factor


def _trainer(strategy, model, optimizer, mode=None, partial=False, **options):
    options = dict(log_every=0, progress_bar="off", **options)
    options["mode"] = mode or PerStep(4)
    return tfps.Trainer(strategy=strategy, model=model, loss_fn=_loss, optimizer=optimizer,
                        dataset_fn=lambda ctx: _dataset(ctx, partial),
                        options=tfps.TrainerOptions(**options))


def _legacy(kind, **kwargs):
    import tf_keras
    return getattr(tf_keras.optimizers.legacy, kind)(**kwargs)


# ------------------------------------------------------------------ the lists are complete
def test_every_trainer_argument_has_a_kind():
    from tfps.train import arguments
    params = set(inspect.signature(tfps.Trainer.__init__).parameters) - {"self"}
    assert params == set(arguments.ARGUMENTS), "give the new argument a kind in ARGUMENTS"


def test_the_legacy_settings_table_is_tf_keras_own():
    import tf_keras

    from tfps.train import optimizers
    allowed = {"decay", "clipnorm", "clipvalue", "global_clipnorm"}  # OptimizerV2's kwargs
    for kind, settings in optimizers.LEGACY_SETTINGS.items():
        cls = getattr(tf_keras.optimizers.legacy, kind)
        declared = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        assert set(settings) == declared | allowed | {"learning_rate"}, kind
        assert set(cls().get_config()) <= set(settings), kind
        assert set(settings) <= set(optimizers.SETTINGS), kind  # every one has a range


# ------------------------------------------------------------------ one-process references
OPTIMIZERS = {
    "sgd-decay": lambda: _legacy("SGD", learning_rate=0.2, decay=0.5),
    "momentum-nesterov-decay": lambda: _legacy("SGD", learning_rate=0.05, momentum=0.9,
                                               nesterov=True, decay=0.2),
    "adagrad-decay-accumulator": lambda: _legacy("Adagrad", learning_rate=0.3, decay=0.3,
                                                 initial_accumulator_value=0.5, epsilon=1e-3),
    "adam-decay-betas": lambda: _legacy("Adam", learning_rate=0.05, decay=0.2, beta_1=0.8,
                                        beta_2=0.99, epsilon=1e-3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_dense_sharded_and_dynamic_rows_follow_the_one_process_reference(strategy, name):
    """Per step (tfps's kernels for the dense and sharded variables, tfps's row rules for
    the DynamicEmbedding): every variable as the optimizer trains it in one process."""
    optimizer = OPTIMIZERS[name]()
    with strategy.scope():
        model = _build()
    initial = _weights(model)
    assert len(tfps.strategy.shards(model.get_layer("big").embeddings)) == 2  # sharded
    trainer = _trainer(strategy, model, optimizer)
    trainer.train(STEPS)
    got, want = _weights(model), _reference(optimizer, initial)
    for key in ("big/embeddings", "head/kernel", "head/bias"):
        np.testing.assert_allclose(got[key], want[key], atol=ATOL, err_msg=key)
    np.testing.assert_allclose(_rows(model), want["dyn/embeddings"], atol=ATOL)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_rows_that_skip_steps_follow_the_one_process_reference(strategy, name):
    """An embedding whose rows are not in every batch: tf_keras's sparse Adam moves every
    row with a moment at every step (it is not "lazy"), and so must the Trainer's."""
    optimizer = OPTIMIZERS[name]()
    with strategy.scope():
        model = _build(dynamic=False)
    initial = _weights(model)
    _trainer(strategy, model, optimizer, partial=True).train(STEPS)
    got = _weights(model)
    want = _reference(optimizer, initial, partial=True, dynamic=False)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=ATOL, err_msg=key)


def test_sgd_decay_applies_to_rows_as_to_dense_variables(strategy):
    """The decayed rate, lr / (1 + decay * t), on DynamicEmbedding rows as on the dense and
    sharded variables; the raw rate would leave the rows where the reference without decay
    puts them, which is far from where decay puts them."""
    optimizer = _legacy("SGD", learning_rate=0.2, decay=2.0)
    with strategy.scope():
        model = _build()
    initial = _weights(model)
    _trainer(strategy, model, optimizer).train(STEPS)
    decayed = _reference(optimizer, initial)
    raw = _reference(_legacy("SGD", learning_rate=0.2), initial)
    rows = _rows(model)
    np.testing.assert_allclose(rows, decayed["dyn/embeddings"], atol=ATOL)
    np.testing.assert_allclose(_weights(model)["head/kernel"], decayed["head/kernel"],
                               atol=ATOL)
    assert np.abs(rows - raw["dyn/embeddings"]).max() > 100 * ATOL


@pytest.mark.parametrize("optimizer, fuse", [
    (lambda: _legacy("SGD", learning_rate=0.5, decay=0.3, clipvalue=0.01), True),
    (lambda: _legacy("Adagrad", learning_rate=0.5, global_clipnorm=0.05), True),
    (lambda: _legacy("SGD", learning_rate=0.5, momentum=0.5, clipnorm=0.01), False),
], ids=["clipvalue", "global_clipnorm", "clipnorm-unfused"])
def test_clipping_is_the_optimizers_own_per_step(strategy, optimizer, fuse):
    """A clipping optimizer's updates are its own `apply_gradients` (not tfps's kernels), on
    fused buffers where clipping does not depend on how variables are grouped."""
    optimizer = optimizer()
    with strategy.scope():
        model = _build(dynamic=False, deep=True)
    initial = _weights(model)
    trainer = _trainer(strategy, model, optimizer, fuse_dense=fuse)
    trainer.train(STEPS)
    # several dense variables on one ps: fused (which are is not public)
    assert (trainer._steps.fused is not None) == fuse
    got, want = _weights(model), _reference(optimizer, initial, dynamic=False, deep=True)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=ATOL, err_msg=key)


def test_clipnorm_with_fused_variables_is_refused_by_name(strategy):
    """clipnorm clips each variable by its own norm; a fused buffer is several variables
    (it trained 3e-3 away from the reference in 12 steps before this was refused)."""
    with pytest.raises(ConfigError, match=r"Arguments `clipnorm` .* and `fuse_dense` .*"
                                          r"Received: clipnorm=0\.01, fuse_dense=True"):
        _trainer(strategy, lambda: _build(dynamic=False, deep=True),
                 _legacy("SGD", clipnorm=0.01))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_accumulate_follows_the_one_process_reference(strategy, name):
    """Accumulate(k) pushes one mean gradient per k batches through the optimizer's
    `apply_gradients`: dense (fused) and sharded variables, each optimizer's settings, decay
    counted per update. (StaleReads is not held to a reference: within a closure a lookup
    may read its rows before or after the previous step's push, which its bounded
    staleness allows.)"""
    mode = Accumulate(3)
    optimizer = OPTIMIZERS[name]()
    with strategy.scope():
        model = _build(dynamic=False, deep=True)
    initial = _weights(model)
    _trainer(strategy, model, optimizer, mode=mode, partial=True).train(STEPS)
    got = _weights(model)
    want = _reference(optimizer, initial, partial=True, mode=mode, dynamic=False, deep=True)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=ATOL, err_msg=key)


@pytest.mark.parametrize("name", sorted(n for n in OPTIMIZERS if not n.startswith("adam")))
def test_local_steps_follow_the_one_process_reference(strategy, name):
    """LocalSteps(h) with one worker: the local copies (dense, sharded rows) are updated by
    the optimizer's kernels with its settings, decay included; each push adds the whole
    difference (outer_learning_rate 1)."""
    optimizer = OPTIMIZERS[name]()
    with strategy.scope():
        model = _build(dynamic=False, deep=True)
    initial = _weights(model)
    mode = LocalSteps(4, outer_learning_rate=1.0)
    _trainer(strategy, model, optimizer, mode=mode, staleness_aware=False).train(STEPS)
    got, want = _weights(model), _reference(optimizer, initial, dynamic=False, deep=True)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=ATOL, err_msg=key)


def test_local_steps_refuse_adam_on_embedding_rows_by_name(strategy):
    """tf_keras's Adam moves every row it has seen at every step; worker-local rows hold only
    those a closure touches, so the one-process trajectory cannot be kept: refused."""
    with pytest.raises(ConfigError, match=r"must not be Adam with local steps.*"
                                          r"Received: optimizer=Adam, local_steps=4"):
        _trainer(strategy, lambda: _build(dynamic=False), OPTIMIZERS["adam-decay-betas"](),
                 mode=LocalSteps(4)).train(4)


@pytest.mark.parametrize("setting", ["clipvalue", "global_clipnorm", "clipnorm"])
def test_local_steps_refuse_a_clipping_optimizer_by_name(strategy, setting):
    """Local steps run the optimizer's kernels on the copies, which do not clip."""
    with pytest.raises(ConfigError, match=r"must not clip gradients for local steps.*"
                                          rf"Received: {setting}=1\.0"):
        _trainer(strategy, lambda: _build(dynamic=False), _legacy("SGD", **{setting: 1.0}),
                 mode=LocalSteps(4), fuse_dense=False)


# ------------------------------------------------------------------ trainable
def test_a_frozen_dynamic_embedding_keeps_its_rows_and_admits_nothing(strategy):
    """Trained first (rows admitted and moved), then frozen: a new Trainer of the same model
    updates the dense variables and leaves every row as it was, new ids unadmitted."""
    import tensorflow as tf
    with strategy.scope():
        model = _build(sharded=False)
    _trainer(strategy, model, _legacy("SGD", learning_rate=0.2)).train(STEPS)
    [tables] = tfps.layers.tables_of(model)
    rows, sizes = _rows(model), tables.sizes()
    assert np.abs(rows).max() > 0 and int(sizes[:, 0].sum()) == NUM_IDS
    head = _value(model.get_layer("head").kernel)

    model.get_layer("dyn").trainable = False
    frozen = _trainer(strategy, model, _legacy("SGD", learning_rate=0.2))
    frozen.train(2 * STEPS)
    np.testing.assert_array_equal(_rows(model), rows)
    np.testing.assert_array_equal(tables.sizes(), sizes)  # nothing counted, nothing admitted
    assert np.abs(_value(model.get_layer("head").kernel) - head).max() > 0
    unseen = tables.lookup(tf.constant([10**12], tf.int64)).numpy()
    np.testing.assert_array_equal(unseen, np.zeros([1, 4]))  # the default row


def test_a_table_frozen_from_the_start_stays_empty(strategy):
    with strategy.scope():
        model = _build(sharded=False, frozen=True)
    _trainer(strategy, model, "adagrad").train(8)
    [tables] = tfps.layers.tables_of(model)
    assert int(tables.sizes().sum()) == 0


def test_trainable_set_after_the_trainer_was_built_is_refused(strategy):
    with strategy.scope():
        model = _build(sharded=False)
    trainer = _trainer(strategy, model, "sgd")
    model.get_layer("dyn").trainable = False
    with pytest.raises(ConfigError, match=r"Argument `trainable` of DynamicEmbedding 'dyn' "
                                          r".*Received: trainable=False"):
        trainer.train(4)
    model.get_layer("dyn").trainable = True
    model.get_layer("head").trainable = False
    with pytest.raises(ConfigError, match=r"must keep its trainable variables"):
        trainer.train(4)


def test_a_frozen_dense_layer_is_not_updated(strategy):
    with strategy.scope():
        model = _build(dynamic=False)
        model.get_layer("head").trainable = False
    kernel = _value(model.get_layer("head").kernel)
    _trainer(strategy, model, _legacy("SGD", learning_rate=0.2, decay=0.1)).train(8)
    np.testing.assert_array_equal(_value(model.get_layer("head").kernel), kernel)


# ------------------------------------------------------------------ refused by name
@pytest.mark.parametrize("make, setting, value", [
    (lambda k: k.optimizers.SGD(0.1, gradient_accumulation_steps=4),
     "gradient_accumulation_steps", "4"),
    (lambda k: k.optimizers.Adam(use_ema=True), "use_ema", "True"),
    (lambda k: k.optimizers.SGD(weight_decay=0.01), "weight_decay", "0.01"),
    (lambda k: k.optimizers.Adagrad(loss_scale_factor=128.0), "loss_scale_factor", "128.0"),
], ids=["gradient_accumulation_steps", "use_ema", "weight_decay", "loss_scale_factor"])
def test_a_keras3_setting_without_legacy_counterpart_is_refused_by_name(make, setting, value):
    import keras

    from tfps.train.optimizers import as_ps_optimizer
    with pytest.raises(ConfigError) as info:
        as_ps_optimizer(make(keras))
    line = str(info.value)
    assert f"`{setting}`" in line and f"{setting}={value}" in line, line
    assert "\n" not in line


def test_every_keras3_setting_with_a_counterpart_is_carried_over():
    import keras

    from tfps.train.optimizers import as_ps_optimizer
    adam = as_ps_optimizer(keras.optimizers.Adam(0.02, beta_1=0.7, beta_2=0.95, epsilon=1e-4,
                                                 amsgrad=True, clipnorm=2.0, name="mine"))
    assert {k: adam.get_config()[k] for k in ("beta_1", "beta_2", "epsilon", "amsgrad",
                                               "clipnorm", "name")} == {
        "beta_1": pytest.approx(0.7), "beta_2": pytest.approx(0.95),
        "epsilon": pytest.approx(1e-4), "amsgrad": True, "clipnorm": 2.0, "name": "mine"}
    ftrl = as_ps_optimizer(keras.optimizers.Ftrl(l2_shrinkage_regularization_strength=0.5,
                                                 beta=0.1))
    assert ftrl.get_config()["l2_shrinkage_regularization_strength"] == 0.5


def test_a_keras3_optimizer_without_legacy_counterpart_is_refused_by_name():
    import keras

    from tfps.train.optimizers import as_ps_optimizer
    with pytest.raises(ConfigError, match=r"no tf_keras legacy counterpart.*optimizer=AdamW"):
        as_ps_optimizer(keras.optimizers.AdamW())


def test_a_variable_constraint_is_refused(strategy):
    import tensorflow as tf

    def build():
        ids = tf.keras.Input([IDS_PER_ROW], dtype=tf.int64)
        h = tf.keras.layers.Flatten()(tf.keras.layers.Embedding(NUM_IDS, 4)(ids))
        return tf.keras.Model(ids, tf.keras.layers.Dense(
            1, kernel_constraint=tf.keras.constraints.NonNeg())(h))

    with pytest.raises(ConfigError, match=r"constraint.*NonNeg"):
        _trainer(strategy, build, "sgd")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(dtype="float64"), "Received: dtype='float64'"),
    (dict(dtype="mixed_float16"), "Received: dtype='mixed_float16'"),
    (dict(seed=3, initializer=lambda shape, dtype: None), "`seed` and `initializer`"),
    (dict(init_scale=0.1, initializer="zeros"), "`init_scale` and `initializer`"),
    (dict(weights=[np.zeros([2, 4])]), "Argument `weights` is not one a DynamicEmbedding"),
    (dict(input_dim=1000), "Argument `input_dim` is not one a DynamicEmbedding"),
], ids=["float64", "mixed", "seed-callable", "scale-zeros", "weights", "input-dim"])
def test_layer_arguments_that_would_change_nothing_are_refused(kwargs, needle):
    import keras

    from tfps.layers import keras3
    for layer in (tfps.layers.DynamicEmbedding, keras3.DynamicEmbedding):
        with pytest.raises(ConfigError) as info:
            layer(4, **kwargs)
        assert needle in str(info.value) and "\n" not in str(info.value)
    assert keras  # the Keras 3 twin refuses the same


def test_layer_config_round_trips_with_the_new_defaults():
    from tfps.layers import keras3
    for layer in (tfps.layers.DynamicEmbedding(4, initializer="zeros", dtype="float32",
                                               trainable=False),
                  keras3.DynamicEmbedding(4, seed=5)):
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.table_config == layer.table_config and clone.trainable == layer.trainable


# ------------------------------------------------------------------ late errors, now early
def test_trainer_arguments_fail_where_they_enter(strategy):
    import tensorflow as tf

    def make(**kwargs):
        args = dict(strategy=strategy, model=lambda: _build(dynamic=False), loss_fn=_loss,
                    optimizer="sgd", dataset_fn=_dataset)
        return tfps.Trainer(**{**args, **kwargs})

    for kwargs, needle in [
        (dict(learning_rate="0.1"), "learning_rate='0.1'"),
        (dict(learning_rate=-0.1), "learning_rate=-0.1"),
        (dict(learning_rate=float("nan")), "learning_rate=nan"),
        (dict(batch_size="32"), "batch_size='32'"),
        (dict(optimizer=_legacy("SGD", learning_rate=float("nan"))), "learning_rate=nan"),
        (dict(optimizer=_legacy("Adam", epsilon=-1.0)), "epsilon=-1.0"),
        (dict(learning_rate=tf.keras.optimizers.schedules.CosineDecay),
         "(an instance, not a class)"),
    ]:
        with pytest.raises(ConfigError) as info:
            make(**kwargs)
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_an_initializer_class_is_refused_at_construction():
    import tensorflow as tf
    with pytest.raises(ConfigError, match=r"not a class.*RandomNormal"):
        tfps.layers.DynamicEmbedding(4, initializer=tf.keras.initializers.RandomNormal)


def test_a_piecewise_schedule_with_many_boundaries_trains(strategy):
    lr = tfps.schedules.get("piecewise", boundaries=list(range(1, 3001)),
                            values=[0.1 / (1 + i) for i in range(3001)])
    trainer = tfps.Trainer(strategy=strategy, model=lambda: _build(dynamic=False),
                           loss_fn=_loss, optimizer="sgd", learning_rate=lr,
                           dataset_fn=_dataset,
                           options=tfps.TrainerOptions(steps_per_closure=4, log_every=0,
                                                       progress_bar="off"))
    assert trainer.train(8).step == 8
    assert trainer.current_learning_rate() == pytest.approx(0.1 / 8)  # 7 boundaries < 8


def test_a_schedule_that_reaches_infinity_within_the_run_is_refused_before_it(strategy):
    import tf_keras
    for lr in (tfps.schedules.get("exponential", initial_learning_rate=0.1, decay_steps=2,
                                  decay_rate=10.0),
               tf_keras.optimizers.schedules.ExponentialDecay(0.1, 2, 10.0)):
        trainer = tfps.Trainer(strategy=strategy, model=lambda: _build(dynamic=False),
                               loss_fn=_loss, optimizer="sgd", learning_rate=lr,
                               dataset_fn=_dataset,
                               options=tfps.TrainerOptions(steps_per_closure=4, log_every=0,
                                                           progress_bar="off"))
        assert trainer.train(8).step == 8  # 0.1 * 10**4: still in range
        with pytest.raises(ConfigError, match=r"Argument `learning_rate` must stay finite"):
            trainer.train(200)
        assert trainer.step == 8  # refused before any step


# ------------------------------------------------------------------ python -m tfps.export
_WRITER = r"""
import sys
import tensorflow as tf
sys.path.insert(0, sys.argv[1])
import model
tf.train.Checkpoint(model=model.build()).save(sys.argv[1] + "/run/checkpoints/ckpt")
"""
_MODEL = '''
import tensorflow as tf

def build():
    m = tf.Module()
    m.w = tf.Variable(tf.range(1000, dtype=tf.float32), name="w")
    return m
'''
# A TF C++ log line (glog form) or absl's banner before them.
_TF_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |^WARNING: All log")


def test_export_with_a_corrupt_checkpoint_is_one_line_exit_2_no_tf_line(tmp_path):
    (tmp_path / "model.py").write_text(_MODEL)
    subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path)], check=True, cwd=REPO,
                   env=task_env(), capture_output=True)
    [data] = (tmp_path / "run" / "checkpoints").glob("ckpt-1.data-*")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the middle of the values
    data.write_bytes(bytes(raw))
    env = task_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # as a user's shell has it: TF's start-up lines on
    out = subprocess.run([sys.executable, "-m", "tfps.export", "--model_dir",
                          str(tmp_path / "run"), "--model", f"{tmp_path}/model.py:build",
                          "--out", str(tmp_path / "out"), "--serving_fn", "serve"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert re.match(r"tfps\.export: error: checkpoint .*ckpt-1 is corrupt: ", lines[0]), lines
    assert not any(_TF_LINE.search(line) for line in out.stdout.splitlines() + lines)
    assert out.stdout == "" and not (tmp_path / "out").exists()
