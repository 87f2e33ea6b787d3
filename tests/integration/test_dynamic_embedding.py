"""`tfps.layers.DynamicEmbedding` on a real in-process cluster (2 ps, 2 workers): admission
and eviction against a pure-Python reference, the Trainer's exact counts, per-row SGD /
Adagrad / Adam against a one-process NumPy reference, concurrent updates of one row,
checkpoints that reshard, the Trainer modes, string keys and Keras 3, records, and a serving
table loaded by a process without tfps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfps
from tfps import errors

PS = [f"/job:ps/replica:0/task:{i}/device:CPU:0" for i in range(2)]


@pytest.fixture(scope="module")
def strategy():
    return tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=2))


# ------------------------------------------------------------------ a reference, in Python
_M64, _GOLDEN, _M1, _M2 = (1 << 64) - 1, 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, \
    0x94D049BB133111EB


def _mix64(key: int) -> int:
    x = (key + _GOLDEN) & _M64  # splitmix64's finalizer, as documented in tfps.layers._hashing
    x = ((x ^ (x >> 30)) * _M1) & _M64
    x = ((x ^ (x >> 27)) * _M2) & _M64
    return x ^ (x >> 31)


def _shard(key: int, shards: int) -> int:
    return _mix64(key & _M64) % shards


def _order(key: int) -> int:
    h = _mix64(key & _M64)
    return h - (1 << 64) if h >= 1 << 63 else h


class _Reference:
    """Admission and eviction as the layer documents them, for int64 keys."""

    def __init__(self, shards, min_count=1, cap=None, ttl=None, policy="lru"):
        self.shards, self.min_count, self.cap, self.ttl = shards, min_count, cap, ttl
        self.policy = policy
        self.counts: dict[int, list] = {}  # key -> [sightings, last step, admitted]

    def step(self, keys, now: int) -> None:
        values, counts = np.unique(np.asarray(keys).ravel(), return_counts=True)
        for key, count in zip(values.tolist(), counts.tolist()):
            seen, _, admitted = self.counts.get(key, [0, 0, 0])
            seen += count
            self.counts[key] = [seen, now, int(admitted or seen >= self.min_count)]

    def evict(self, now: int) -> np.ndarray:
        drop = set()
        if self.ttl is not None:
            drop = {k for k, (_, last, _) in self.counts.items() if last < now - self.ttl}
        if self.cap is not None:
            def score(k):
                count, last, _ = self.counts[k]
                first, second = (last, count) if self.policy == "lru" else (count, last)
                return first, second, _order(k)
            for s in range(self.shards):
                for admitted in (1, 0):
                    group = sorted((k for k, c in self.counts.items() if c[2] == admitted and
                                    _shard(k, self.shards) == s and k not in drop), key=score)
                    drop |= set(group[:max(0, len(group) - self.cap)])
        out = np.zeros([self.shards, 2], np.int64)
        for k in drop:
            out[_shard(k, self.shards), 1 - self.counts.pop(k)[2]] += 1
        return out

    def rows(self, s: int) -> list[int]:
        return sorted(k for k, c in self.counts.items() if c[2] and _shard(k, self.shards) == s)

    def sizes(self) -> np.ndarray:
        out = np.zeros([self.shards, 2], np.int64)
        for k, c in self.counts.items():
            out[_shard(k, self.shards)] += [c[2], 1]
        return out


# ------------------------------------------------------------------ helpers
def _tables(config, shards=2):
    from tfps.layers._tables import ShardedTables
    tables = ShardedTables(config, "t")
    tables.create([PS[i % 2] for i in range(shards)])
    return tables


_LOOKUPS: dict = {}


def _train_lookup(tables, keys, now):
    """``(unique keys, their embeddings)`` of one training lookup at step `now`."""
    import tensorflow as tf
    if id(tables) not in _LOOKUPS:  # one trace per table: any number of keys
        _LOOKUPS[id(tables)] = tf.function(tables.train_lookup, reduce_retracing=True)
    unique, _, counts = tf.unique_with_counts(tf.constant(np.asarray(keys).ravel(), tf.int64))
    return unique.numpy(), _LOOKUPS[id(tables)](unique, counts,
                                                tf.constant(now, tf.int64)).numpy()


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_admission_and_eviction_match_the_reference(strategy, policy):
    """Random skewed batches; after every step the rows and counted ids of each shard are
    exactly the reference's, and every eviction removes what the reference removes."""
    from tfps.layers.config import TableConfig
    config = TableConfig(dim=2, min_count=2, max_rows_per_shard=6, ttl_steps=5, policy=policy,
                         evict_every=3, default_value=[0.5, -0.5])
    tables, ref = _tables(config), _Reference(2, 2, 6, 5, policy)
    rng = np.random.default_rng(3)
    evicted = np.zeros([2, 2], np.int64)
    for step in range(24):
        keys = (rng.zipf(1.3, size=12) % 40) * 1_000_003 - 7  # any int64 values
        unique, emb = _train_lookup(tables, keys, step)
        ref.step(keys, step)
        # Not admitted (yet): the default row; admitted: a row of its own.
        waiting = [k for k in unique.tolist() if not ref.counts[k][2]]
        np.testing.assert_array_equal(emb[np.isin(unique, waiting)],
                                      np.tile([[0.5, -0.5]], [len(waiting), 1]))
        if step % 3 == 2:
            got = tables.evict(step + 1)
            want = ref.evict(step + 1)
            np.testing.assert_array_equal(got, want)
            evicted += got
        np.testing.assert_array_equal(tables.sizes(), ref.sizes())
        for s, shard in enumerate(tables.snapshot()):
            assert shard["keys"].tolist() == ref.rows(s), (step, s)
            assert {k: list(c) for k, c in zip(shard["count_keys"].tolist(),
                                              shard["counts"].tolist())} == \
                {k: c for k, c in ref.counts.items() if _shard(k, 2) == s}
    assert evicted[:, 0].sum() > 0 and evicted[:, 1].sum() > 0  # the test evicted both kinds


def test_checkpoint_restores_exactly_into_other_shard_counts(strategy, tmp_path):
    import tensorflow as tf
    import tf_keras

    from tfps.layers._tables import ShardedTables
    from tfps.layers.config import TableConfig
    from tfps.train import optim_math
    config = TableConfig(dim=3, min_count=2, initializer="normal")
    rule = optim_math.rule_for(tf_keras.optimizers.legacy.Adam(0.1))
    source = ShardedTables(config, "src")
    source.create(PS, rule, (0.0, 0.0))
    rng = np.random.default_rng(0)
    @tf.function(reduce_retracing=True)
    def push(keys, grads):
        source.push(keys, grads, tf.constant(0, tf.int64))
    for step in range(5):
        keys = np.unique(rng.integers(-50, 50, size=30))
        _train_lookup(source, keys, step)
        push(tf.constant(keys, tf.int64), tf.constant(rng.normal(size=(len(keys), 3)),
                                                      tf.float32))
    path = tf.train.Checkpoint(t=source).write(str(tmp_path / "ckpt"))
    before = _merged(source.snapshot())
    for shards in (3, 1):
        target = ShardedTables(config, f"dst{shards}")
        target.create([PS[i % 2] for i in range(shards)], rule, (0.0, 0.0))
        tf.train.Checkpoint(t=target).read(path).assert_consumed()
        after = target.snapshot()
        for key in before:
            np.testing.assert_array_equal(_merged(after)[key], before[key])  # bit for bit
        for s, shard in enumerate(after):  # every key on its shard for this count
            assert all(_shard(k, shards) == s for k in shard["keys"].tolist())
            assert all(_shard(k, shards) == s for k in shard["count_keys"].tolist())


def _merged(snapshot) -> dict:
    out = {}
    for name, sort_by in (("keys", "keys"), ("rows", "keys"), ("count_keys", "count_keys"),
                          ("counts", "count_keys")):
        order = np.argsort(np.concatenate([s[sort_by] for s in snapshot]), kind="stable")
        out[name] = np.concatenate([s[name] for s in snapshot])[order]
    return out


# ------------------------------------------------------------------ through the Trainer
def _layer_model(dim=4, w0=None, **layer):
    import tensorflow as tf
    m = tf.Module()
    m.emb = tfps.layers.DynamicEmbedding(dim, name="emb", **layer)
    m.w = tf.Variable(np.asarray(w0, "float32") if w0 is not None else
                      np.linspace(-0.5, 0.5, dim, dtype="float32")[:, None], name="w")
    return m


def _fixed_data(ids, y):
    import tensorflow as tf
    return lambda ctx: tf.data.Dataset.from_tensors(
        (tf.constant(ids, tf.int64), tf.constant(y, tf.float32))).repeat()


def _linear_loss(m, batch):
    import tensorflow as tf
    ids, y = batch
    emb = m.emb(ids, training=True)                      # [B, slots, dim]
    pred = tf.squeeze(tf.reduce_sum(emb, 1) @ m.w, 1)
    return tf.reduce_mean(tf.square(pred - y))


def _trainer(strategy, model, loss, data, optimizer="sgd", lr=0.1, **options):
    options = dict(dict(log_every=0, progress_bar="off"), **options)
    return tfps.Trainer(strategy=strategy, model=model, loss_fn=loss, optimizer=optimizer,
                        learning_rate=lr, dataset_fn=data,
                        options=tfps.TrainerOptions(**options))


IDS = [[1, 2], [2, 3], [4, 2]]  # id 2 three times per batch, 1, 3 and 4 once
Y = [0.5, -1.0, 2.0]


def _numpy_reference(optimizer: str, lr: float, steps: int, w0, default, min_count, init):
    """The step as documented, in float64: lookups (default row until admitted), the
    gradient of the mean squared error, the rule on each row present (Adam's t per row) and
    on the dense weight (t = step + 1)."""
    ids, y = np.asarray(IDS), np.asarray(Y, np.float64)
    w = np.asarray(w0, np.float64)
    rows, slots, age, seen = {}, {}, {}, {}
    keys, counts = np.unique(ids, return_counts=True)
    acc0 = 0.1
    w_slots = [np.full_like(w, acc0)] if optimizer == "adagrad" else \
        [np.zeros_like(w), np.zeros_like(w)] if optimizer == "adam" else []

    def rule(p, s, g, t):
        if optimizer == "sgd":
            return p - lr * g, s
        if optimizer == "adagrad":
            a = s[0] + g * g
            return p - lr * g / (np.sqrt(a) + 1e-7), [a]
        m = 0.9 * s[0] + 0.1 * g
        v = 0.999 * s[1] + 0.001 * g * g
        lr_t = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        return p - lr_t * m / (np.sqrt(v) + 1e-7), [m, v]

    for step in range(steps):
        for k, c in zip(keys.tolist(), counts.tolist()):
            seen[k] = seen.get(k, 0) + c
            if k not in rows and seen[k] >= min_count:
                rows[k] = init[k].astype(np.float64)
                slots[k] = [np.full(len(w), acc0)] if optimizer == "adagrad" else \
                    [np.zeros(len(w)), np.zeros(len(w))] if optimizer == "adam" else []
                age[k] = 1
        emb = np.array([[rows.get(k, default) for k in row] for row in ids.tolist()])
        h = emb.sum(1)
        pred = h @ w[:, 0]
        d = 2 * (pred - y) / len(y)
        g_w = (h * d[:, None]).sum(0)[:, None]
        g_rows = {}
        for b, row in enumerate(ids.tolist()):
            for k in row:
                g_rows[k] = g_rows.get(k, 0) + d[b] * w[:, 0]
        for k, g in g_rows.items():
            if k in rows:
                rows[k], slots[k] = rule(rows[k], slots[k], g, age[k])
                age[k] += 1
        w, w_slots = rule(w, w_slots, g_w, step + 1)
    return rows, slots, age, w


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam"])
def test_row_updates_match_a_single_process_reference(strategy, optimizer):
    from tfps.layers import _hashing
    lr, steps, min_count, default = 0.1, 4, 2, [0.25, 0.0, -0.25, 0.5]
    w0 = np.linspace(-0.5, 0.5, 4, dtype="float32")[:, None]
    trainer = _trainer(strategy, lambda: _layer_model(4, w0, min_count=min_count,
                                                      initializer="normal", init_scale=0.3,
                                                      default_value=default),
                       _linear_loss, _fixed_data(IDS, Y), optimizer, lr,
                       steps_per_closure=steps)
    assert trainer.train(steps).step == steps  # one closure: the steps in order
    keys = np.unique(IDS)
    init = dict(zip(keys.tolist(), _hashing.hash_rows(
        __import__("tensorflow").constant(keys, "int64"), 4, "normal", 0.3, 0).numpy()))
    rows, slots, age, w = _numpy_reference(optimizer, lr, steps, w0, np.asarray(default),
                                           min_count, init)
    (table,) = tfps.layers.tables_of(trainer.model)
    got = {}
    for shard in table.snapshot():
        got.update(zip(shard["keys"].tolist(), shard["rows"]))
    assert sorted(got) == sorted(rows)  # ids 1, 3, 4 admitted at step 2, id 2 at step 1
    for k in rows:
        want = np.concatenate([rows[k], *slots[k], [age[k]]])
        np.testing.assert_allclose(got[k], want, rtol=2e-5, atol=1e-6, err_msg=f"row {k}")
    np.testing.assert_allclose(trainer.model.w.numpy(), w, rtol=2e-5, atol=1e-6)


def test_concurrent_updates_of_one_row_all_apply(strategy):
    """Two workers push to the same two rows at once, 240 times: SGD on the sum of the rows
    moves each by exactly -lr per step (a lost update would leave it higher), and the
    sighting counts are exact."""
    import tensorflow as tf

    def loss(m, batch):
        ids, _ = batch
        return tf.reduce_sum(m.emb(ids, training=True)) + 0.0 * tf.reduce_sum(m.w)

    trainer = _trainer(strategy, lambda: _layer_model(2, initializer="zeros"), loss,
                       _fixed_data([[7, 8, 8]], [0.0]), "sgd", 0.5, steps_per_closure=2)
    assert trainer.train(240).step == 240
    (table,) = tfps.layers.tables_of(trainer.model)
    merged = _merged(table.snapshot())
    assert merged["keys"].tolist() == [7, 8]
    np.testing.assert_array_equal(merged["rows"][:, :2], [[-120.0] * 2, [-240.0] * 2])
    assert merged["counts"][:, 0].tolist() == [240, 480]


def test_trainer_counts_admissions_and_evictions_exactly(strategy, capsys, tmp_path):
    """A fixed batch (so the counts do not depend on which worker runs which step): each
    record's rows, admitted and evicted are exactly the reference's; eviction runs at every
    multiple of evict_every, before the record of that step; TensorBoard gets the per-shard
    values."""
    ids = np.arange(40).reshape(20, 2) * 7919 + 3
    ids[:10, 1] = ids[:10, 0]  # 10 ids twice per batch, 20 once
    cap, every = 7, 4
    trainer = tfps.Trainer(
        strategy=strategy, model=lambda: _layer_model(4, min_count=2, max_rows_per_shard=cap,
                                                      evict_every=every),
        loss_fn=_linear_loss, optimizer="adagrad", learning_rate=0.1,
        dataset_fn=_fixed_data(ids, np.zeros(20)), model_dir=str(tmp_path),
        options=tfps.TrainerOptions(steps_per_closure=2, log_every=4, progress_bar="off",
                                    checkpoint_every=None))
    trainer.train(12)
    ref, rows_before, expected = _Reference(2, 2, cap), 0, []
    for step in range(12):
        ref.step(ids, step)
        if (step + 1) % every == 0:
            evicted = int(ref.evict(step + 1)[:, 0].sum())
            rows = int(ref.sizes()[:, 0].sum())
            expected.append(f"rows: {rows} | admitted: {rows - rows_before + evicted} | "
                            f"evicted: {evicted}")
            rows_before = rows
    records = [line[line.index("rows: "):] for line in capsys.readouterr().out.splitlines()
               if line.startswith("train |")]
    assert records == expected
    assert "evicted: 0" not in records[-1]  # the cap did evict
    shard0 = trainer.describe().splitlines()[-3].split()
    assert shard0[:4] == ["emb", "0/2", str(ref.sizes()[0, 0]),
                          str(ref.sizes()[0, 1] - ref.sizes()[0, 0])]
    tags = _tensorboard_tags(tmp_path / "train")
    assert {"rows", "admitted", "evicted", "dynamic/emb/rows/shard_0",
            "dynamic/emb/bytes/shard_1", "dynamic/emb/evicted/shard_1"} <= tags


def _tensorboard_tags(directory) -> set:
    import tensorflow as tf
    tags = set()
    for path in directory.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_levers_do_not_change_the_arithmetic(strategy):
    """fuse_dense, dedup_lookups and stack_steps (the defaults) give the rows and weights
    that the Trainer gives with all three off."""
    import tensorflow as tf

    def model():
        m = _layer_model(4, min_count=1, initializer="uniform")
        m.w2 = tf.Variable(np.eye(4, dtype="float32"), name="w2")  # two dense variables
        return m

    def loss(m, batch):
        ids, y = batch
        h = tf.reduce_sum(m.emb(ids, training=True), 1) @ m.w2
        return tf.reduce_mean(tf.square(tf.squeeze(h @ m.w, 1) - y))

    results = []
    for on in (True, False):
        trainer = _trainer(strategy, model, loss, _fixed_data(IDS, Y), "adam", 0.05,
                           steps_per_closure=3, fuse_dense=on, dedup_lookups=on, stack_steps=on)
        trainer.train(3)
        (table,) = tfps.layers.tables_of(trainer.model)
        results.append((_merged(table.snapshot())["rows"], trainer.model.w.numpy(),
                        trainer.model.w2.numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_trainer_checkpoint_restores_the_tables_exactly(strategy, tmp_path):
    def make():
        return tfps.Trainer(
            strategy=strategy, model=lambda: _layer_model(4, min_count=2), loss_fn=_linear_loss,
            optimizer="adagrad", learning_rate=0.1, dataset_fn=_fixed_data(IDS, Y),
            model_dir=str(tmp_path), options=tfps.TrainerOptions(
                steps_per_closure=3, log_every=0, progress_bar="off"))

    first = make()
    first.train(6)
    (table,) = tfps.layers.tables_of(first.model)
    saved = _merged(table.snapshot())
    second = make()  # a restarted chief: new tables, restored from ckpt-6
    assert second.restored_step == 6
    (restored,) = tfps.layers.tables_of(second.model)
    for key, value in _merged(restored.snapshot()).items():
        np.testing.assert_array_equal(value, saved[key])
    assert second.train(9).step == 9  # and training goes on from there


@pytest.mark.parametrize("kwargs, needle", [
    ({"accumulate_steps": 2}, r"mode=Accumulate\(steps=2\)"),
    ({"read_every": 2}, r"mode=StaleReads\(every=2\)"),
    ({"local_steps": 2}, r"mode=LocalSteps\(steps=2"),
    ({"staleness_aware": True}, "staleness_aware=True"),
])
def test_modes_that_cannot_carry_rows_are_refused(strategy, kwargs, needle):
    with pytest.raises(errors.ConfigError, match=needle) as info:
        _trainer(strategy, _layer_model, _linear_loss, _fixed_data(IDS, Y), **kwargs)
    assert "\n" not in str(info.value) and "DynamicEmbedding" in str(info.value)


def test_bad_input_is_refused_with_the_argument_and_the_value(strategy):
    import tensorflow as tf
    for kwargs, needle in (({"key_dtype": "float32"}, "key_dtype='float32'"),
                           ({"min_count": 0}, "min_count=0"),
                           ({"ttl_steps": 10, "evict_every": 20}, "evict_every=20, ttl_steps=10")):
        with pytest.raises(errors.ConfigError, match=needle):
            tfps.layers.DynamicEmbedding(4, **kwargs)
    with pytest.raises(errors.ConfigError, match="dim=-1"):
        tfps.layers.DynamicEmbedding(-1)
    with pytest.raises(errors.ConfigError, match="optimizer=RMSprop"):
        _trainer(strategy, _layer_model, _linear_loss, _fixed_data(IDS, Y), "rmsprop")
    trainer = _trainer(strategy, _layer_model, _linear_loss, _fixed_data(IDS, Y))
    with pytest.raises(errors.ConfigError, match="ids of dtype float32"):
        trainer.model.emb(tf.constant([[1.0]]))
    with pytest.raises(errors.ConfigError, match="training=True outside a Trainer step"):
        trainer.model.emb(tf.constant([[1]], tf.int64), training=True)  # a plain tape's call
    ids = tf.keras.Input([2], dtype=tf.float32)
    with pytest.raises(errors.ConfigError, match="ids of dtype float32") as info:
        tfps.layers.DynamicEmbedding(4, name="dyn")(ids)  # a Keras model's construction
    assert "\n" not in str(info.value)

    def float_ids(m, batch):
        return tf.reduce_sum(m.emb(tf.cast(batch[0], tf.float32), training=True)) * m.w[0, 0]

    bad = _trainer(strategy, _layer_model, float_ids, _fixed_data(IDS, Y), steps_per_closure=1)
    with pytest.raises(errors.ConfigError, match="ids of dtype float32") as info:
        bad.train(1)  # raised while the closure is traced: the Trainer surfaces it as is
    assert "\n" not in str(info.value)


def test_keras_fit_refuses_the_model(strategy):
    import tensorflow as tf

    import tfps.keras
    with strategy.scope():
        ids = tf.keras.Input([2], dtype=tf.int64)
        out = tf.keras.layers.Dense(1)(tf.keras.layers.Flatten()(
            tfps.layers.DynamicEmbedding(4, name="dyn")(ids)))
        model = tf.keras.Model(ids, out)
        model.compile(tf.keras.optimizers.legacy.SGD(0.1), "mse")
    with pytest.raises(errors.ConfigError, match="tfps.Trainer") as info:
        tfps.keras.fit(model, _fixed_data(IDS, Y), epochs=1, steps_per_epoch=2)
    assert "'dyn'" in str(info.value)


def test_string_keys_in_a_keras3_model(strategy, tmp_path):
    import keras
    import tensorflow as tf

    from tfps.layers import keras3

    def build():
        ids = keras.Input([2], dtype="string")
        emb = keras3.DynamicEmbedding(8, key_dtype="string", name="words")(ids)
        return keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(emb)))

    words = tf.constant([["a", "b"], ["b", "c"], ["é", "a"], ["d", "c"]])

    def data(ctx):
        return tf.data.Dataset.from_tensors((words, tf.constant([1.0, -1.0, 2.0, 0.0]))).repeat()

    def loss(m, batch):
        return tf.reduce_mean(tf.square(tf.squeeze(m(batch[0], training=True), 1) - batch[1]))

    def make():
        return tfps.Trainer(strategy=strategy, model=build, loss_fn=loss, optimizer="adam",
                            learning_rate=0.05, dataset_fn=data, model_dir=str(tmp_path),
                            options=tfps.TrainerOptions(steps_per_closure=10, log_every=0,
                                                        progress_bar="off"))

    trainer = make()
    first = trainer.train(10).loss
    last = trainer.train(200).loss
    assert last < 0.1 * first, (first, last)
    (table,) = tfps.layers.tables_of(trainer.model)
    keys = sorted(k for s in table.snapshot() for k in s["keys"].tolist())
    assert keys == sorted(w.encode() for w in ["a", "b", "c", "d", "é"])
    assert all(len(s["keys"]) for s in table.snapshot())  # both shards hold words
    restored = make()  # a Keras 3 model's checkpoint carries its tables too
    assert restored.restored_step == 200
    (again,) = tfps.layers.tables_of(restored.model)
    for key, value in _merged(again.snapshot()).items():
        np.testing.assert_array_equal(value, _merged(table.snapshot())[key])


def _plain_tf(script: str, tmp_path) -> dict:
    """Runs `script` in a fresh Python (plain TensorFlow); returns its last line as JSON."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_serving_lookup_loads_in_a_process_without_tfps(strategy, tmp_path):
    import tensorflow as tf
    default = [9.0, 8.0, 7.0, 6.0]
    trainer = _trainer(strategy, lambda: _layer_model(4, min_count=2, default_value=default),
                       _linear_loss, _fixed_data(IDS, Y), "adagrad", 0.1, steps_per_closure=2)
    trainer.train(4)
    (table,) = tfps.layers.tables_of(trainer.model)
    keys, embeddings = (t.numpy() for t in table.embeddings())
    module = tfps.layers.serving_lookup(trainer.model.emb)
    tf.saved_model.save(module, str(tmp_path / "emb"))
    probe = [int(k) for k in keys] + [123456789]  # every trained id and an unknown one
    script = ("import json, sys, tensorflow as tf\n"
              f"m = tf.saved_model.load({str(tmp_path / 'emb')!r})\n"
              f"out = m.lookup(tf.constant({probe}, tf.int64)).numpy().tolist()\n"
              "print(json.dumps({'rows': out, 'size': int(m.size()), "
              "'tfps': any(n.split('.')[0] == 'tfps' for n in sys.modules)}))\n")
    result = _plain_tf(script, tmp_path)
    assert result["tfps"] is False and result["size"] == len(keys)
    np.testing.assert_array_equal(np.asarray(result["rows"][:-1], np.float32), embeddings)
    assert result["rows"][-1] == default


def test_trainer_export_serves_the_table_in_a_process_without_tfps(strategy, tmp_path):
    """`Trainer.export`: the SavedModel holds one local table per DynamicEmbedding (every
    trained row; unknown ids read the default row) and predicts what the trained model
    predicts, loaded by plain TensorFlow."""
    import tensorflow as tf

    def build():
        ids = tf.keras.Input([2], dtype=tf.int64, name="ids")
        dense = tf.keras.Input([3], name="dense")
        emb = tfps.layers.DynamicEmbedding(4, min_count=2, default_value=0.25, name="emb")(ids)
        h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
        return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1, name="score")(h))

    ids = np.array([[1, 2], [2, 3], [4, 2]], np.int64)
    dense = np.arange(9, dtype=np.float32).reshape(3, 3) / 10

    def data(ctx):
        return tf.data.Dataset.from_tensors(((ids, dense), tf.constant(Y))).repeat()

    def loss(m, batch):
        return tf.reduce_mean(tf.square(tf.squeeze(m(batch[0], training=True), 1) - batch[1]))

    trainer = _trainer(strategy, build, loss, data, "adagrad", 0.1, steps_per_closure=2)
    trainer.train(4)
    probe_ids = np.array([[1, 2], [3, 4], [99, 2], [123456789, 555]], np.int64)  # 2 unknown
    probe_dense = np.ones([4, 3], np.float32)
    want = trainer.model([probe_ids, probe_dense], training=False).numpy()
    path = trainer.export(str(tmp_path / "export" / "1"))
    script = ("import json, sys, numpy as np, tensorflow as tf\n"
              f"m = tf.saved_model.load({path!r})\n"
              "out = m.signatures['serving_default'](\n"
              f"    ids=tf.constant({probe_ids.tolist()}, tf.int64),\n"
              f"    dense=tf.constant({probe_dense.tolist()}, tf.float32))\n"
              "print(json.dumps({'out': list(out.values())[0].numpy().tolist(), "
              "'tfps': any(n.split('.')[0] == 'tfps' for n in sys.modules)}))\n")
    result = _plain_tf(script, tmp_path)
    assert result["tfps"] is False
    np.testing.assert_allclose(np.asarray(result["out"]), want, rtol=1e-5, atol=1e-6)
