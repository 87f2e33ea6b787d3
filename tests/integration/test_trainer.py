"""tfps.Trainer on real in-process clusters: gradients, packing, accumulation, staleness,
checkpoints, exactly-once evaluation, Keras 3 models, argument checks."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import tfps
from tfps import errors

NUM_IDS, DIM = 20_000, 8  # 640 KB table: two shards (>= 256 KiB each), one per ps


@pytest.fixture(scope="module")
def strategy():
    return tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=2))


def _fixed_batch():
    rng = np.random.default_rng(1)
    ids = np.array([3, 17, 17, 12_000, 19_999, 5], np.int64)  # rows on both shards, a repeat
    x = rng.normal(size=(6, 4)).astype("float32")
    y = rng.normal(size=(6,)).astype("float32")
    return ids, x, y


def _initial_values():
    rng = np.random.default_rng(2)
    return (rng.normal(size=(NUM_IDS, DIM)).astype("float32") * 0.1,
            rng.normal(size=(4 + DIM, 1)).astype("float32") * 0.1)


def _loss(table, w, batch):
    import tensorflow as tf
    ids, x, y = batch
    h = tf.concat([tf.nn.embedding_lookup(table, ids), x], 1)
    return tf.reduce_mean(tf.square(tf.squeeze(h @ w, 1) - y))


class _Model:
    """A plain tf.Module with a (sharded) table and a dense weight."""

    @staticmethod
    def build():
        import tensorflow as tf
        table0, w0 = _initial_values()
        module = tf.Module()
        module.table = tf.Variable(table0, name="table")
        module.w = tf.Variable(w0, name="w")
        return module


def _fixed_dataset(ctx):
    import tensorflow as tf
    ids, x, y = _fixed_batch()
    return tf.data.Dataset.from_tensors((ids, x, y)).repeat()


def _sharded_trainer(strategy, dataset_fn, lr, **options):
    return tfps.Trainer(
        strategy=strategy, model=_Model.build,
        loss_fn=lambda m, b: _loss(m.table, m.w, b), optimizer="sgd", learning_rate=lr,
        dataset_fn=dataset_fn,
        options=tfps.TrainerOptions(log_every=0, progress_bar="off", **options))


def _assert_one_sgd_update(trainer, lr, batches):
    """The trainer's variables == one plain SGD step, in one process without a strategy, on
    the mean gradient of `batches` from the initial values."""
    import tensorflow as tf

    table0, w0 = _initial_values()
    table, w = tf.Variable(table0), tf.Variable(w0)
    with tf.GradientTape() as tape:
        loss = tf.add_n([_loss(table, w, b) for b in batches]) / len(batches)
    g_table, g_w = tape.gradient(loss, [table, w])
    got_table = np.concatenate([v.numpy() for v in trainer.model.table.variables])
    np.testing.assert_allclose(got_table, table0 - lr * tf.convert_to_tensor(g_table).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.model.w.numpy(), w0 - lr * g_w.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_sharded_gradients_match_single_process(strategy):
    lr = 0.5
    trainer = _sharded_trainer(strategy, _fixed_dataset, lr, steps_per_closure=1)
    assert len(trainer.model.table.variables) == 2  # really sharded
    trainer.train(1)
    _assert_one_sgd_update(trainer, lr, [_fixed_batch()])
    # Sparse end to end: each shard's gradient is IndexedSlices, the dense weight's is not.
    kinds = trainer.gradient_types
    shard_kinds = [kinds[v.name] for v in trainer.model.table.variables]
    assert shard_kinds == ["IndexedSlices", "IndexedSlices"], kinds
    assert kinds[trainer.model.w.name] != "IndexedSlices"


def _linear_data(ctx):
    import tensorflow as tf
    x = tf.random.stateless_normal([2048], seed=[ctx.input_pipeline_id, 7])
    return tf.data.Dataset.from_tensor_slices((x, 3.0 * x)).repeat().batch(32)


def _linear_model():
    import tensorflow as tf
    module = tf.Module()
    module.w = tf.Variable(0.0)
    return module


def _linear_loss(m, b):
    import tensorflow as tf
    return tf.reduce_mean(tf.square(m.w * b[0] - b[1]))


def _linear_trainer(strategy, **options):
    options.setdefault("log_every", 0)
    options.setdefault("progress_bar", "off")
    return tfps.Trainer(strategy=strategy, model=_linear_model, loss_fn=_linear_loss,
                        optimizer="sgd", learning_rate=0.05, dataset_fn=_linear_data,
                        options=tfps.TrainerOptions(**options))


def test_packing_runs_k_steps_and_k_updates_per_closure(strategy):
    trainer = _linear_trainer(strategy, steps_per_closure=8)
    result = trainer.train(64)
    assert result.step == 64 and result.steps_per_closure == 8
    assert int(trainer.optimizer.iterations.numpy()) == 64  # one ps update per step
    assert abs(float(trainer.model.w.numpy()) - 3.0) < 0.05


def test_accumulation_pushes_one_update_per_closure(strategy):
    trainer = _linear_trainer(strategy, accumulate_steps=4)
    result = trainer.train(64)
    # batch(32) without drop_remainder has no static shape: one fetch per micro-batch.
    assert trainer.traffic().fetches == 1
    assert result.step == 64 and result.steps_per_closure == 4
    assert int(trainer.optimizer.iterations.numpy()) == 16  # 64 micro-batches / 4
    # 16 updates of the mean gradient 2 (w - 3) E[x^2]: w = 3 (1 - (1 - 2 lr)^16) = 2.44, where
    # 64 plain updates would reach 3.00 - the effective-batch trade-off in TrainerOptions.
    assert float(trainer.model.w.numpy()) == pytest.approx(3 * (1 - 0.9 ** 16), abs=0.15)


def _micro_batches(ctx):
    """Four different fixed micro-batches, in order, repeated."""
    import tensorflow as tf
    ids, x, y = _fixed_batch()
    return tf.data.Dataset.from_tensor_slices(
        (np.stack([ids] * 4), np.stack([x * (i + 1) for i in range(4)]),
         np.stack([y + i for i in range(4)]))).repeat()


def test_accumulated_gradient_matches_single_process(strategy):
    """One update from 4 accumulated micro-batches == SGD with their mean gradient, computed
    in one process; the sparse table's gradient stays IndexedSlices; the 4 micro-batches come
    as one stacked element; and only the first micro-batch reads the dense weight from ps."""
    lr = 0.5
    trainer = _sharded_trainer(strategy, _micro_batches, lr, accumulate_steps=4)
    assert trainer.train(4).step == 4
    assert int(trainer.optimizer.iterations.numpy()) == 1
    ids, x, y = _fixed_batch()
    _assert_one_sgd_update(trainer, lr, [(ids, x * (i + 1), y + i) for i in range(4)])
    kinds = trainer.gradient_types
    assert [kinds[v.name] for v in trainer.model.table.variables] == ["IndexedSlices"] * 2
    traffic = trainer.traffic()
    assert traffic.fetches == 1 / 4  # static shapes: the 4 micro-batches came as one element
    # The K-1 micro-batches in the loop read only a gather from each of the 2 table shards
    # from ps; `w` once per closure, outside the loop (the optimizer's plain-number
    # hyperparameters are constants of the graph: nothing to read).
    assert traffic.loop.from_ps[0] == 2 and traffic.loop.ps_ops == 2, traffic
    # To ps in the loop: each gather's ids (sized at run time) and, since both ps work in the
    # loop, each one's copy of the loop predicate at every iteration (1 byte each).
    assert traffic.loop.to_ps == (2 + 2, 2), traffic
    assert traffic.from_ps[0] == 2 + 1 / 4, traffic


def test_accumulation_ends_exactly_at_train_steps(strategy):
    trainer = _linear_trainer(strategy, accumulate_steps=4)
    assert trainer.train(10).step == 10  # closures of 4, 4 and a last one of 2
    assert int(trainer.optimizer.iterations.numpy()) == 3


def test_automatic_packing_amortises_scheduling(strategy):
    # A one-parameter model: a step costs far less than a schedule() round trip, so the
    # measurement must choose several steps per closure.
    trainer = _linear_trainer(strategy)
    result = trainer.train(400)
    assert result.steps_per_closure > 1
    assert result.step == 400


def test_staleness_scales_the_learning_rate(strategy):
    """Simulate 3 foreign updates between this update's read and write: τ = 3, lr / 3."""
    import tensorflow as tf

    holder = {}

    def loss_fn(m, b):
        holder["trainer"].version.assign_add(3)  # others' updates land meanwhile
        return tf.square(m.w - 1.0)              # d/dw = 2 (w - 1) = -2 at w = 0

    trainer = tfps.Trainer(strategy=strategy, model=_linear_model, loss_fn=loss_fn,
                           optimizer="sgd", learning_rate=0.3, dataset_fn=_linear_data,
                           options=tfps.TrainerOptions(steps_per_closure=1, log_every=0,
                                                       staleness_aware=True))
    holder["trainer"] = trainer
    result = trainer.train(1)
    assert result.staleness.tolist() == [3]
    np.testing.assert_allclose(trainer.model.w.numpy(), 0.3 / 3 * 2.0, rtol=1e-6)


def test_staleness_is_measured_with_several_workers(strategy):
    import tensorflow as tf

    def slow_loss(m, b):  # ~a few ms of work between the version read and the update
        noise = tf.reduce_sum(tf.linalg.matmul(tf.ones([300, 300]), tf.ones([300, 300])))
        return _linear_loss(m, b) + 0.0 * noise

    trainer = tfps.Trainer(strategy=strategy, model=_linear_model, loss_fn=slow_loss,
                           optimizer="sgd", learning_rate=0.05, dataset_fn=_linear_data,
                           options=tfps.TrainerOptions(steps_per_closure=5, log_every=0,
                                                       staleness_aware=True))
    result = trainer.train(300)
    assert len(result.staleness) == 300
    assert result.staleness.min() >= 0
    assert result.staleness.max() >= 1, "two concurrent workers never overlapped"


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])  # adagrad: slots restored too
def test_checkpoint_resume(strategy, tmp_path, optimizer):
    model_dir = str(tmp_path / "run")
    first = _linear_trainer_dir(strategy, model_dir, optimizer)
    assert first.restored_step == 0
    assert first.train(40).step == 40
    w_first = float(first.model.w.numpy())
    second = _linear_trainer_dir(strategy, model_dir, optimizer)  # a "restarted" chief
    assert second.restored_step == 40
    assert float(second.model.w.numpy()) == w_first
    assert int(second.optimizer.iterations.numpy()) == 40  # the optimizer's state came back
    result = second.train(80)
    assert (result.start_step, result.step) == (40, 80)
    # A chief restarted after the end (e.g. killed while evaluating) trains nothing more.
    # Default options: the packing measurement must not run steps past the end either.
    third = tfps.Trainer(strategy=strategy, model=_linear_model, loss_fn=_linear_loss,
                         optimizer=optimizer, learning_rate=0.05, dataset_fn=_linear_data,
                         model_dir=model_dir, options=tfps.TrainerOptions(log_every=0))
    assert third.train(80).step == 80
    import tensorflow as tf
    assert tf.train.latest_checkpoint(f"{model_dir}/checkpoints").endswith("ckpt-80")


def _linear_trainer_dir(strategy, model_dir, optimizer):
    return tfps.Trainer(strategy=strategy, model=_linear_model, loss_fn=_linear_loss,
                        optimizer=optimizer, learning_rate=0.05, dataset_fn=_linear_data,
                        model_dir=model_dir,
                        options=tfps.TrainerOptions(steps_per_closure=10, checkpoint_every=20,
                                                    log_every=20, progress_bar="off"))


def test_progress_records_and_tensorboard(strategy, tmp_path, capsys):
    import glob
    trainer = tfps.Trainer(strategy=strategy, model=_linear_model, loss_fn=_linear_loss,
                           optimizer="sgd", learning_rate=0.05, dataset_fn=_linear_data,
                           model_dir=str(tmp_path), batch_size=32,
                           options=tfps.TrainerOptions(steps_per_closure=10, log_every=20,
                                                       progress_bar="off"))
    trainer.train(40)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("train |")]
    assert [l.split(" | ")[1] for l in lines] == ["step: 20", "step: 40"]
    assert all(k in lines[-1] for k in ("steps/sec:", "examples/sec:", "loss:", "lr: 0.05"))
    assert glob.glob(str(tmp_path / "train" / "events.out.tfevents.*"))


def test_evaluation_counts_every_example_once(strategy):
    import tensorflow as tf

    def eval_data(ctx):
        return tf.data.Dataset.range(100).map(lambda i: tf.cast(i, tf.float32)).batch(7)

    trainer = tfps.Trainer(
        strategy=strategy, model=_linear_model, loss_fn=_linear_loss, optimizer="sgd",
        learning_rate=0.05, dataset_fn=_linear_data, eval_dataset_fn=eval_data,
        eval_fn=lambda m, b: {"total": tf.reduce_sum(b), "count": tf.cast(tf.size(b), tf.float32)},
        options=tfps.TrainerOptions(log_every=0, eval_shards=5))
    metrics = trainer.evaluate()
    assert metrics["count"] == 100          # 15 batches over 5 shards, none twice or missed
    assert metrics["total"] == pytest.approx(49.5)  # sum / count: the mean of 0..99


def test_evaluation_with_fewer_batches_than_shards(strategy):
    import tensorflow as tf

    trainer = tfps.Trainer(
        strategy=strategy, model=_linear_model, loss_fn=_linear_loss, optimizer="sgd",
        learning_rate=0.05, dataset_fn=_linear_data,
        eval_dataset_fn=lambda ctx: tf.data.Dataset.range(9).map(
            lambda i: tf.cast(i, tf.float32)).batch(5),  # 2 batches, 8 shards asked for
        eval_fn=lambda m, b: {"count": tf.cast(tf.size(b), tf.float32)},
        options=tfps.TrainerOptions(log_every=0, eval_shards=8))
    assert trainer.evaluate()["count"] == 9


def test_keras3_model_and_optimizer(strategy):
    import keras
    import tensorflow as tf

    def build():
        return keras.Sequential([keras.Input([4]), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dense(1)])

    w_true = np.arange(4, dtype="float32").reshape(4, 1)

    def data(ctx):
        x = tf.random.stateless_normal([1024, 4], seed=[ctx.input_pipeline_id, 3])
        return tf.data.Dataset.from_tensor_slices((x, x @ w_true)).repeat().batch(64)

    trainer = tfps.Trainer(
        strategy=strategy, model=build,
        loss_fn=lambda m, b: tf.reduce_mean(tf.square(m(b[0], training=True) - b[1])),
        optimizer=keras.optimizers.SGD(learning_rate=0.02, momentum=0.9), dataset_fn=data,
        options=tfps.TrainerOptions(steps_per_closure=10, log_every=0))
    assert type(trainer.optimizer).__module__.startswith("tf_keras")  # converted
    assert all("/job:ps/" in v.value.device for v in trainer.model.trainable_variables)
    # Judge the model, not one step's batch loss: two async workers with momentum 0.9 make the
    # last step's loss bounce (seen 0.003..0.7 at step 300), the whole-set error does not.
    x_eval = np.random.default_rng(0).normal(size=(512, 4)).astype("float32")

    def mse():
        return float(np.mean((trainer.model(x_eval).numpy() - x_eval @ w_true) ** 2))

    before = mse()
    trainer.train(300)
    after = mse()
    assert after < 0.2 * before, (before, after)


@pytest.mark.parametrize("kwargs, needle", [
    ({"steps_per_closure": 0}, "steps_per_closure=0"),
    ({"accumulate_steps": 0}, "accumulate_steps=0"),
    ({"log_every": -1}, "log_every=-1"),
    ({"checkpoint_every": 0}, "checkpoint_every=0"),
    ({"progress_bar": "yes"}, "progress_bar='yes'"),
])
def test_bad_options(kwargs, needle):
    with pytest.raises(errors.ConfigError, match=needle):
        tfps.TrainerOptions(**kwargs)


def test_bad_trainer_arguments(strategy):
    ok = dict(strategy=strategy, model=_linear_model, loss_fn=_linear_loss, optimizer="sgd",
              dataset_fn=_linear_data)
    with pytest.raises(errors.ConfigError, match="optimizer='adamw2'"):
        tfps.Trainer(**{**ok, "optimizer": "adamw2"})
    with pytest.raises(errors.ConfigError, match="strategy=None"):
        tfps.Trainer(**{**ok, "strategy": None})
    with pytest.raises(errors.ConfigError, match="loss_fn=3"):
        tfps.Trainer(**{**ok, "loss_fn": 3})
    with pytest.raises(errors.ConfigError, match="train_steps=-5"):
        tfps.Trainer(**ok).train(-5)


def test_keras3_sharded_embedding_gradients_stay_sparse(strategy):
    import keras
    import tensorflow as tf

    def build():
        ids = keras.Input([2], dtype="int32")
        emb = keras.layers.Embedding(NUM_IDS, DIM)(ids)  # 640 KB: sharded over both ps
        return keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(emb)))

    def data(ctx):
        ids = tf.random.stateless_uniform([512, 2], seed=[1, 0], maxval=500, dtype=tf.int32)
        return tf.data.Dataset.from_tensor_slices(
            (ids, tf.cast(ids[:, :1] % 7, tf.float32))).repeat().batch(64)

    trainer = tfps.Trainer(
        strategy=strategy, model=build, optimizer="adagrad", learning_rate=0.5,
        loss_fn=lambda m, b: tf.reduce_mean(tf.square(m(b[0], training=True) - b[1])),
        dataset_fn=data, options=tfps.TrainerOptions(steps_per_closure=5, log_every=0))
    first = trainer.train(5).loss
    last = trainer.train(100).loss
    kinds = trainer.gradient_types
    shards = [k for k in kinds if "embeddings/part_" in k]
    assert len(shards) == 2 and all(kinds[k] == "IndexedSlices" for k in shards), kinds
    assert last < 0.5 * first, (first, last)


def _benchmark_settings():
    """H and S of the modes the speed rows use (benchmarks/rows.py)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    try:
        import rows
    finally:
        sys.path.pop(0)
    return rows.H_BEST, rows.S_STALE


H_BEST, S_STALE = _benchmark_settings()


@pytest.mark.parametrize("mode, steps", [
    ({"local_steps": H_BEST}, 20 * H_BEST), ({"read_every": S_STALE}, 400)],
    ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()) if isinstance(m, dict) else "")
def test_modes_keep_the_linear_example_at_least_squares(strategy, mode, steps):
    """The quality guard's linear half: with the two workers of this cluster, a mode that
    changes the arithmetic still ends within 0.01 of the least-squares w of the linear
    example's data (examples/linear_regression.py: y = 3x + N(0, 0.1²), batches of 256).

    Local steps are asynchronous: a worker that pulls between the other's pushes pushes a
    stale difference. With η = 1/2 alone, the worst order of pulls and pushes leaves w up to
    0.74 off after the example's 400 steps and does not shrink with more steps (every order
    of 2 x 2 to 2 x 10 closures simulated exhaustively; seen once in a CI run). Pushes scaled
    by the measured staleness (η / (1 + τ)), the default with several workers, shrink it with
    every closure: worst 0.20 after 4 closures, 0.046 after 8, 0.0104 after 16 (H = 100). So
    the guard runs 20 closures' worth of steps with the staleness scaling left at its
    default."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    x = rng.normal(size=4096).astype(np.float32)
    y = (3.0 * x + 0.1 * rng.normal(size=4096)).astype(np.float32)
    w_lstsq = float(np.dot(x, y) / np.dot(x, x))

    def data(ctx):
        return tf.data.Dataset.from_tensor_slices((x, y)).shard(
            ctx.num_input_pipelines, ctx.input_pipeline_id).shuffle(1024, seed=0) \
            .repeat().batch(256, drop_remainder=True)

    trainer = tfps.Trainer(strategy=strategy, model=_linear_model, loss_fn=_linear_loss,
                           optimizer="sgd", learning_rate=0.05, dataset_fn=data,
                           options=tfps.TrainerOptions(log_every=0, progress_bar="off",
                                                       **mode))
    assert trainer.train(steps).step == steps
    assert abs(float(trainer.model.w.numpy()) - w_lstsq) < 0.01, \
        (float(trainer.model.w.numpy()), w_lstsq)
