"""The traffic levers of `tfps.TrainerOptions` on a real in-process cluster: each changes
what travels (counted by `trainer.traffic()`) and not the arithmetic (compared with the lever
off, bit for bit where the ops are the same)."""

from __future__ import annotations

import numpy as np
import pytest

import tfps

NUM_IDS, DIM = 20_000, 8  # a 640 KB table: two shards, one per ps


@pytest.fixture(scope="module")
def strategy():
    return tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1))


def _model():
    import tensorflow as tf
    rng = np.random.default_rng(5)
    m = tf.Module()
    # Named: tf_keras keys an optimizer slot by variable id, and an unnamed ShardedVariable
    # gets its first shard's (docs/tensorflow-notes.md, "Unnamed sharded variables").
    m.table = tf.Variable(rng.normal(size=(NUM_IDS, DIM)).astype("float32") * 0.1, name="t")
    m.w1 = tf.Variable(rng.normal(size=(4 * DIM + 4, 16)).astype("float32") * 0.1, name="w1")
    m.b1 = tf.Variable(np.zeros(16, "float32"), name="b1")
    m.w2 = tf.Variable(rng.normal(size=(16, 2)).astype("float32") * 0.1, name="w2")
    m.b2 = tf.Variable(np.zeros(2, "float32"), name="b2")
    return m


def _loss(m, batch):
    import tensorflow as tf
    ids, x, y = batch
    emb = tf.reshape(tf.nn.embedding_lookup(m.table, ids), [-1, 4 * DIM])
    h = tf.nn.relu(tf.concat([emb, x], 1) @ m.w1 + m.b1)
    return tf.reduce_mean(tf.square(h @ m.w2 + m.b2 - y))


def _data(ctx):
    """Power-law ids: many repeats in every batch. Static shapes (stackable)."""
    import tensorflow as tf
    rng = np.random.default_rng(7)
    ids = (rng.zipf(1.5, size=(16, 32, 4)) % NUM_IDS).astype("int64")
    x = rng.normal(size=(16, 32, 4)).astype("float32")
    y = rng.normal(size=(16, 32, 2)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((ids, x, y)).repeat()


def _trainer(strategy, model_dir=None, **options):
    options = dict(dict(steps_per_closure=1, log_every=0, progress_bar="off",
                        fuse_dense=False, dedup_lookups=False, stack_steps=False), **options)
    return tfps.Trainer(strategy=strategy, model=_model, loss_fn=_loss, optimizer="adagrad",
                        learning_rate=0.1, dataset_fn=_data, model_dir=model_dir,
                        options=tfps.TrainerOptions(**options))


def _values(trainer):
    m = trainer.model
    table = np.concatenate([v.numpy() for v in m.table.variables])
    dense = [v.numpy() for v in (m.w1, m.b1, m.w2, m.b2)]
    slots = [trainer.optimizer.get_slot(v, "accumulator").numpy()
             for v in (m.w1, m.b1, m.w2, m.b2)]
    table_slot = np.concatenate([trainer.optimizer.get_slot(v, "accumulator").numpy()
                                 for v in m.table.variables])
    return [table, *dense, *slots, table_slot]


def test_fused_equals_unfused_bit_for_bit(strategy):
    plain, fused = _trainer(strategy), _trainer(strategy, fuse_dense=True)
    plain.train(2)
    fused.train(2)
    for a, b in zip(_values(plain), _values(fused)):
        np.testing.assert_array_equal(a, b)
    # 4 dense variables over 2 ps travel in 2 buffers: per step 2 reads instead of 4 and 2
    # updates instead of 4 (tensors of more than 4 bytes: the optimizer's scalar
    # hyperparameters travel either way), the same bytes.
    def dense(trainer, direction, ops):
        return [c for c in trainer.traffic().crossings if c.direction == direction and
                c.consumer.startswith(ops) * (direction == "to_ps") + (
                    c.producer == ops) * (direction == "from_ps") and (c.bytes or 0) > 4]

    for trainer, count in ((plain, 4), (fused, 2)):
        reads = dense(trainer, "from_ps", "ReadVariableOp")
        updates = dense(trainer, "to_ps", "ResourceApply")
        assert len(reads) == len(updates) == count, (reads, updates)
        assert sum(c.bytes for c in reads) == 4 * (36 * 16 + 16 + 16 * 2 + 2)


def test_fused_checkpoints_restore_into_unfused_and_back(strategy, tmp_path):
    fused = _trainer(strategy, model_dir=str(tmp_path), fuse_dense=True)
    fused.train(3)
    plain = _trainer(strategy, model_dir=str(tmp_path))  # restores what the fused one saved
    assert plain.restored_step == 3
    for a, b in zip(_values(fused), _values(plain)):
        np.testing.assert_array_equal(a, b)
    plain.train(4)
    again = _trainer(strategy, model_dir=str(tmp_path), fuse_dense=True)  # and back
    assert again.restored_step == 4
    for a, b in zip(_values(plain), _values(again)):
        np.testing.assert_array_equal(a, b)
    # One more step from the same state and the same first batch (a new Trainer's data start
    # over): the fused buffers and slots were loaded exactly.
    fresh_plain = _trainer(strategy, model_dir=str(tmp_path))
    fresh_plain.train(5)
    again.train(5)
    for a, b in zip(_values(fresh_plain), _values(again)):
        np.testing.assert_array_equal(a, b)


def test_dedup_equals_no_dedup_and_gathers_distinct_ids(strategy):
    plain, dedup = _trainer(strategy), _trainer(strategy, dedup_lookups=True)
    plain.train(3)
    dedup.train(3)
    for a, b in zip(_values(plain), _values(dedup)):  # sums of duplicate rows may reorder
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    def gathered_from(trainer):
        return {c.producer for c in trainer.traffic().crossings
                if c.direction == "to_ps" and c.consumer == "ResourceGather"}

    # Each shard gathers the ids routed to it; with dedup, only their distinct values.
    assert gathered_from(plain) == {"DynamicPartition"}
    assert gathered_from(dedup) == {"Unique"}


def test_stacked_steps_fetch_one_element_per_closure(strategy):
    plain = _trainer(strategy, steps_per_closure=8)
    stacked = _trainer(strategy, steps_per_closure=8, stack_steps=True)
    plain.train(16)
    stacked.train(16)
    assert plain.traffic().fetches == 1 and stacked.traffic().fetches == 1 / 8
    for a, b in zip(_values(plain), _values(stacked)):  # the same batches, in the same order
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("h, steps, fuse", [(2, 1, False), (4, 8, False), (4, 8, True)],
                         ids=["H=1", "H=4", "H=4-fused"])
def test_local_steps_with_one_worker_follow_the_per_step_trajectory(strategy, h, steps, fuse):
    """One worker, η = 1: H local steps then a push of the difference land where H per-step
    updates do (Adagrad on the sharded table and the dense layers, slots included; the dense
    layers fused into buffers or not). H=1 is the last, one-step closure of a local_steps=2
    run."""
    per_step = _trainer(strategy, steps_per_closure=min(h, steps))
    local = _trainer(strategy, local_steps=h, steps_per_closure=None, fuse_dense=fuse)
    per_step.train(steps)
    local.train(steps)
    assert int(local.optimizer.iterations.numpy()) == steps
    for a, b in zip(_values(per_step), _values(local)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_local_steps_pull_and_push_once_per_closure(strategy):
    local = _trainer(strategy, local_steps=4, steps_per_closure=None, fuse_dense=True,
                     stack_steps=True)
    local.train(8)
    t = local.traffic()
    # The H=4 local steps read nothing from ps: everything they use was pulled before.
    assert t.loop.from_ps[0] == 0 and t.loop.to_ps[0] == 0 and t.loop.ps_ops == 0, t.loop
    assert t.fetches == 1 / 4


def test_stale_reads_push_every_step_from_one_read(strategy):
    """read_every=2 with SGD on the linear part: the second step's gradient is taken at the
    parameters of the first read, and both updates land."""
    import tensorflow as tf
    lr = 0.1

    def model():
        m = tf.Module()
        m.w = tf.Variable([[1.0], [2.0]], name="w")
        return m

    xs = np.array([[[1.0, 0.5]], [[0.3, -1.0]]], "float32")
    ys = np.array([[1.0], [0.0]], "float32")

    def data(ctx):
        return tf.data.Dataset.from_tensor_slices((xs, ys)).repeat()

    def loss(m, b):
        x, y = b
        return tf.reduce_sum(tf.square(tf.matmul(x, m.w) - y))

    trainer = tfps.Trainer(strategy=strategy, model=model, loss_fn=loss, optimizer="sgd",
                           learning_rate=lr, dataset_fn=data,
                           options=tfps.TrainerOptions(read_every=2, log_every=0,
                                                       progress_bar="off"))
    trainer.train(2)
    w0 = np.array([[1.0], [2.0]], "float32")

    def grad(w, i):
        return 2 * xs[i].T @ (xs[i] @ w - ys[i:i + 1])

    expected = w0 - lr * grad(w0, 0) - lr * grad(w0, 1)  # both at the first read
    np.testing.assert_allclose(trainer.model.w.numpy(), expected, rtol=1e-6)
    assert trainer.traffic().loop.from_ps[0] <= 2  # no read of w in the loop (hypers only)


def test_hyperparameters_are_constants_read_from_no_ps_and_can_still_change(strategy):
    import tensorflow as tf

    def model():
        m = tf.Module()
        m.w = tf.Variable([[1.0], [2.0]], name="w_hyper")
        return m

    def data(ctx):
        return tf.data.Dataset.from_tensors(
            (tf.constant([[1.0, 0.5]]), tf.constant([[0.0]]))).repeat()

    def loss(m, b):
        return tf.reduce_sum(tf.square(tf.matmul(b[0], m.w) - b[1]))

    trainer = tfps.Trainer(strategy=strategy, model=model, loss_fn=loss,
                           optimizer=tf.keras.optimizers.legacy.SGD(0.1, momentum=0.0),
                           dataset_fn=data,
                           options=tfps.TrainerOptions(steps_per_closure=1, log_every=0,
                                                       progress_bar="off"))
    trainer.train(1)
    reads = [c for c in trainer.traffic().crossings
             if c.direction == "from_ps" and c.producer == "ReadVariableOp"]
    assert [c.bytes for c in reads] == [8], reads  # w alone: no learning rate, no momentum
    moved = trainer.model.w.numpy()
    trainer.optimizer.learning_rate = 0.0  # takes effect: the closure is traced again
    trainer.train(3)
    np.testing.assert_array_equal(trainer.model.w.numpy(), moved)
    assert trainer.current_learning_rate() == 0.0
