"""`tfps.data.FileInput` on an in-process cluster: every record exactly once per epoch against a
reference (a tally on the ps of the ids each step saw), in shard and service mode (an in-process
tf.data service), resuming inside an epoch, CSV, exact evaluation over files, and every bad
input named (issue 23). Kills of real worker processes are tests/drills/test_recsys_files.py."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

import tfps
import tfps.data

COUNTS = (37, 0, 50, 9)  # records per file: an empty file, units that span files
RECORDS = sum(COUNTS)
BATCH = 8
SPEC = {"id": tf.io.FixedLenFeature([], tf.int64), "x": tf.io.FixedLenFeature([], tf.float32)}


def parse(records):
    return tf.io.parse_example(records, SPEC)


def _example(i: int, bad: bool = False) -> bytes:
    x = (tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"oops"])) if bad else
         tf.train.Feature(float_list=tf.train.FloatList(value=[float(i % 7)])))
    return tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])), "x": x})
    ).SerializeToString()


def write_files(directory, counts=COUNTS, bad_record: int | None = None) -> str:
    os.makedirs(directory, exist_ok=True)
    first = 0
    for k, count in enumerate(counts):
        with tf.io.TFRecordWriter(os.path.join(directory, f"part-{k}.tfrecord")) as writer:
            for i in range(first, first + count):
                writer.write(_example(i, bad=i == bad_record))
        first += count
    return os.path.join(directory, "*.tfrecord")


@pytest.fixture(scope="module")
def strategy():
    return tfps.make_strategy(tfps.in_process_cluster(num_ps=1, num_workers=2))


@pytest.fixture(scope="module")
def dispatcher():
    service = tf.data.experimental.service
    server = service.DispatchServer(service.DispatcherConfig(port=0))
    address = server.target.split("://")[1]
    workers = [service.WorkerServer(service.WorkerConfig(dispatcher_address=address))
               for _ in range(2)]
    yield server.target
    for worker in workers:
        worker._stop()  # TF's servers have no public stop
    server._stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("tiny"))


class Tally(tf.Module):
    """w fits x; `seen` counts, on the ps, how often a step saw each record id."""

    def __init__(self, records=RECORDS):
        super().__init__()
        self.w = tf.Variable(0.0)
        self.seen = tf.Variable(tf.zeros([records]), trainable=False)


def tally_loss(model, batch):
    model.seen.scatter_nd_add(tf.expand_dims(batch["id"], 1), tf.ones_like(batch["x"]))
    return tf.reduce_mean((model.w - batch["x"]) ** 2)


def make_trainer(strategy, data, model_dir=None, steps_per_closure=3, **kwargs):
    return tfps.Trainer(strategy=strategy, model=lambda: Tally(), loss_fn=tally_loss,
                        optimizer="sgd", learning_rate=0.01, data=data, model_dir=model_dir,
                        options=tfps.TrainerOptions(steps_per_closure=steps_per_closure,
                                                    log_every=0, checkpoint_every=None),
                        **kwargs)


@pytest.mark.parametrize("mode", ["shard", "service"])
def test_every_record_exactly_once_per_epoch(strategy, dispatcher, files, mode):
    reader = tfps.data.Service(dispatcher) if mode == "service" else tfps.data.Shard()
    data = tfps.data.FileInput(files, parse_fn=parse, batch_size=BATCH, mode=reader, seed=4)
    trainer = make_trainer(strategy, data)
    assert trainer.steps_per_epoch == -(-RECORDS // BATCH) == 12
    result = trainer.train(3 * trainer.steps_per_epoch)
    assert result.step == 36
    # The reference: each record id seen by the workers' steps exactly 3 times.
    np.testing.assert_array_equal(trainer.model.seen.numpy(), np.full(RECORDS, 3.0))
    seen = data.visitation()
    assert (seen.epochs, seen.seen_once, seen.seen_more, seen.missing) == (3, 3 * RECORDS, 0, 0)


def test_accumulation_closures_keep_the_epoch_exact(strategy, files):
    from tfps.train.modes import Accumulate  # 5 micro-batches an update: closures of 5 steps

    data = tfps.data.FileInput(files, parse_fn=parse, batch_size=BATCH, shuffle=False)
    trainer = tfps.Trainer(strategy=strategy, model=lambda: Tally(), loss_fn=tally_loss,
                           optimizer="sgd", learning_rate=0.01, data=data,
                           options=tfps.TrainerOptions(mode=Accumulate(5), log_every=0,
                                                       checkpoint_every=None))
    trainer.train(2 * trainer.steps_per_epoch)
    np.testing.assert_array_equal(trainer.model.seen.numpy(), np.full(RECORDS, 2.0))


def test_resume_inside_an_epoch(strategy, files, tmp_path):
    def run(steps):
        data = tfps.data.FileInput(files, parse_fn=parse, batch_size=BATCH, seed=9)
        trainer = make_trainer(strategy, data, model_dir=str(tmp_path))
        start = trainer.step
        trainer.train(steps)
        # The next Trainer in this process writes the same model_dir: this one hands it over.
        getattr(getattr(trainer, "_checkpoints", None), "lease", None).release()
        return data, trainer, start

    first, _, _ = run(12 + 5)  # one epoch and 5 steps of the second
    assert first.ledger.epoch == 1 and first.ledger.position == 5 * BATCH
    data, trainer, start = run(2 * 12)
    assert start == 17
    # The tally is in the checkpoint too: every record twice over the two runs.
    np.testing.assert_array_equal(trainer.model.seen.numpy(), np.full(RECORDS, 2.0))
    v = data.visitation(2)
    assert (v.seen_once, v.seen_more, v.missing) == (2 * RECORDS, 0, 0)


def test_csv_files_with_a_header(strategy, tmp_path):
    for k, (first, count) in enumerate(((0, 20), (20, 27))):
        lines = ["id,x"] + [f"{i},{i % 5}.5" for i in range(first, first + count)]
        (tmp_path / f"part-{k}.csv").write_text("\n".join(lines) + "\n")

    def parse_csv(lines):
        ids, x = tf.io.decode_csv(lines, [tf.constant([], tf.int64), tf.constant([], tf.float32)])
        return {"id": ids, "x": x}

    data = tfps.data.FileInput(str(tmp_path / "*.csv"), parse_fn=parse_csv, batch_size=BATCH,
                               csv_header=True)
    assert data.records_per_epoch == 47
    trainer = tfps.Trainer(strategy=strategy, model=lambda: Tally(47), loss_fn=tally_loss,
                           optimizer="sgd", learning_rate=0.01, data=data,
                           options=tfps.TrainerOptions(steps_per_closure=4, log_every=0,
                                                       checkpoint_every=None))
    trainer.train(2 * trainer.steps_per_epoch)
    np.testing.assert_array_equal(trainer.model.seen.numpy(), np.full(47, 2.0))


def test_exact_evaluation_over_files(strategy, files):
    data = tfps.data.FileInput(files, parse_fn=parse, batch_size=BATCH)
    evaluation = tfps.data.FileInput(files, parse_fn=parse, batch_size=5, shuffle=False)
    trainer = make_trainer(strategy, data, eval_dataset_fn=evaluation,
                           eval_fn=lambda m, b: {"count": tf.cast(tf.size(b["id"]), tf.float32),
                                                 "ids": tf.reduce_sum(b["id"])})
    metrics = trainer.evaluate()
    assert metrics["count"] == RECORDS
    assert metrics["ids"] * RECORDS == sum(range(RECORDS))  # a mean: sum / count


# ---------------------------------------------------------------------------- bad input
def test_bad_files_are_named_before_training(tmp_path):
    with pytest.raises(tfps.data.DataError, match="no file matches"):
        tfps.data.FileInput(str(tmp_path / "none-*.tfrecord"), parse_fn=parse, batch_size=4)
    good = write_files(tmp_path / "good", counts=(30,))
    raw = open(good.replace("*", "part-0"), "rb").read()
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(raw[:-7])
    with pytest.raises(tfps.data.DataError, match=r"cut.tfrecord': record 29: cut short"):
        tfps.data.FileInput(str(cut), parse_fn=parse, batch_size=4)
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.tfrecord"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(tfps.data.DataError,
                       match=r"corrupt.tfrecord': record 1[45]: corrupt \(its length or data"):
        tfps.data.FileInput(str(corrupt), parse_fn=parse, batch_size=4)
    gz = tmp_path / "broken.tfrecord.gz"
    gz.write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(tfps.data.DataError, match=r"broken.tfrecord.gz': record \d+: cannot"):
        tfps.data.FileInput(str(gz), parse_fn=parse, batch_size=4, compression="GZIP")
    bad_first = write_files(tmp_path / "bad_first", counts=(10,), bad_record=2)
    with pytest.raises(tfps.data.DataError, match="part-0.tfrecord': record 2: the parse "
                                                  "function rejects it"):
        tfps.data.FileInput(bad_first, parse_fn=parse, batch_size=4)


def test_a_record_rejected_during_training_is_named(strategy, tmp_path):
    files = write_files(tmp_path, counts=(20, 30), bad_record=41)  # file 1, record 21
    data = tfps.data.FileInput(files, parse_fn=parse, batch_size=4, shuffle=False)
    trainer = make_trainer(strategy, data, steps_per_closure=2)
    with pytest.raises(tfps.data.DataError) as info:
        trainer.train(2 * trainer.steps_per_epoch)
    assert "part-1.tfrecord': record 21: the parse function rejects it" in str(info.value)
    assert info.value.record == 21


def test_arguments_are_checked(strategy, files):
    with pytest.raises(tfps.errors.ConfigError, match="Pass one of `dataset_fn`"):
        tfps.Trainer(strategy=strategy, model=lambda: Tally(), loss_fn=tally_loss, optimizer="sgd",
                     dataset_fn=lambda ctx: None,
                     data=tfps.data.FileInput(files, parse_fn=parse, batch_size=4))
    with pytest.raises(tfps.errors.ConfigError, match="Argument `batch_size`"):
        tfps.data.FileInput(files, parse_fn=parse, batch_size=0)
    with pytest.raises(tfps.errors.ConfigError, match="TFPS_DATA_SERVICE"):
        os.environ.pop("TFPS_DATA_SERVICE", None)
        tfps.data.FileInput(files, parse_fn=parse, batch_size=4, mode=tfps.data.Service())


@pytest.mark.parametrize("loss", ["a record of every chunk", "every record"])
def test_records_the_service_loses_are_read_by_the_worker(strategy, dispatcher, files,
                                                          monkeypatch, capfd, loss):
    """The tf.data service loses what a lost data worker had not sent (at most once); here the
    service is made to lose records deterministically, and each closure notices and reads its
    unit itself: the epoch stays exact."""
    service = tf.data.experimental.service
    distribute = service.distribute

    def lossy(*args, **kwargs):
        real = distribute(*args, **kwargs)
        if loss == "every record":
            return lambda dataset: real(dataset).take(0)
        return lambda dataset: real(dataset).map(
            lambda pos, rows: (pos[1:], tf.nest.map_structure(lambda t: t[1:], rows)))

    monkeypatch.setattr(service, "distribute", lossy)
    data = tfps.data.FileInput(files, parse_fn=parse, batch_size=BATCH,
                               mode=tfps.data.Service(dispatcher))
    trainer = make_trainer(strategy, data)
    trainer.train(trainer.steps_per_epoch)
    np.testing.assert_array_equal(trainer.model.seen.numpy(), np.full(RECORDS, 1.0))
    err = capfd.readouterr().err
    assert "tfps.data: the tf.data service delivered" in err, err[-2000:]
    assert "reading the unit here instead" in err


def test_keras_fit_trains_epochs_over_files(strategy, files, capsys):
    import tf_keras

    def parse_xy(records):
        ex = parse(records)
        return tf.expand_dims(ex["x"], 1), 2.0 * ex["x"]

    data = tfps.data.FileInput(files, parse_fn=parse_xy, batch_size=BATCH)
    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.Input((1,)), tf_keras.layers.Dense(1)])
        model.compile(tf_keras.optimizers.legacy.SGD(0.01), "mse", steps_per_execution=3)
    history = tfps.keras.fit(model, data, epochs=2)  # steps per epoch: from the files
    assert len(history.history["loss"]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fit |")]
    assert [line.split(" | ")[2] for line in lines] == ["step: 12", "step: 24"], lines
