"""Models, data and timing shared by both sides of every benchmark: plain TensorFlow only.

Nothing here imports tfps (the baselines import this module). Each workload is the same on
both sides: the same model builder, the same per-worker dataset function, the same loss.

* ``recsys``: 4 categorical ids -> embedding (``num_ids`` x 32, sharded by the strategy's
  partitioner) + 8 dense features -> MLP 256-128-1, batch 512, logistic loss, Adagrad.
* ``linear``: the seed example's y = w x (one scalar variable), batch 256, SGD.
* ``clicks``: examples/recsys.py's model on its planted click data (power-law ids over
  ``num_ids``, 4 slots, embedding 16, MLP 256-128-1, batch 512, Adagrad 0.2), with a held-out
  set whose oracle AUC is known (``examples/common/planted_clicks.py``).

Data are a small pool of random batches generated once per worker and repeated, so the input
pipeline costs the same (almost nothing) on both sides and the benchmarks time training.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf_keras: the only Keras that fits under PSS

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
from common import planted_clicks as clicks

RECSYS_SLOTS = 4
RECSYS_DENSE = 8
RECSYS_DIM = 32
RECSYS_BATCH = 512
RECSYS_IDS = 100_000
RECSYS_LR = 0.1
LINEAR_BATCH = 256
LINEAR_LR = 0.05
# Distinct batches per worker before the data repeat: enough that the embedding rows touched
# vary from step to step, small enough to generate in well under a second.
POOL_BATCHES = 64


# ------------------------------------------------------------------------------ recsys
def recsys_batch(stream, index, num_ids: int, batch_size: int = RECSYS_BATCH):
    """((ids, dense), clicks): ids uniform over the table, so every shard is hit evenly and a
    step touches the same number of rows whatever the table size."""
    seed = tf.stack([tf.cast(stream, tf.int32), tf.cast(index, tf.int32)])
    ids = tf.random.stateless_uniform([batch_size, RECSYS_SLOTS], seed=seed, minval=0,
                                      maxval=num_ids, dtype=tf.int64)
    dense = tf.random.stateless_normal([batch_size, RECSYS_DENSE], seed=seed + [0, 7])
    clicks = tf.cast(tf.random.stateless_uniform([batch_size], seed=seed + [0, 13]) < 0.3,
                     tf.float32)
    return (ids, dense), clicks


def recsys_dataset(num_ids: int = RECSYS_IDS, stream: int = 0):
    return (tf.data.Dataset.range(POOL_BATCHES)
            .map(lambda i: recsys_batch(stream, i, num_ids))
            .cache().repeat().prefetch(4))


def recsys_dataset_fn(num_ids: int = RECSYS_IDS):
    """A per-worker dataset function: each input pipeline has its own stream of batches."""
    def dataset_fn(input_context=None):
        stream = input_context.input_pipeline_id if input_context is not None else 0
        return recsys_dataset(num_ids, stream)
    return dataset_fn


def build_recsys(num_ids: int = RECSYS_IDS):
    """The tf_keras functional model. The table starts at zeros: a 4 M-row table is
    initialised on its ps in a fill, not by drawing 128 M random numbers."""
    ids = tf.keras.Input([RECSYS_SLOTS], dtype=tf.int64)
    dense = tf.keras.Input([RECSYS_DENSE])
    emb = tf.keras.layers.Embedding(num_ids, RECSYS_DIM, embeddings_initializer="zeros",
                                    name="ids")(ids)
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
    h = tf.keras.layers.Dense(256, activation="relu")(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1)(h))


def recsys_loss(model, batch):
    features, clicks = batch
    logits = tf.squeeze(model(features, training=True), 1)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(clicks, logits))


def recsys_optimizer():
    return tf.keras.optimizers.legacy.Adagrad(RECSYS_LR)


# ------------------------------------------------------------------------------ linear
class Linear(tf.Module):
    """The seed example's model: y = w x."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(0.0, name="w")


def linear_dataset(stream: int = 0):
    # Whole batches as elements: batching scalar slices would cost more than the model.
    x = tf.random.stateless_normal([POOL_BATCHES, LINEAR_BATCH], seed=[stream, 1])
    y = 3.0 * x + 0.1 * tf.random.stateless_normal(x.shape, seed=[stream, 2])
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().prefetch(4)


def linear_dataset_fn(input_context=None):
    return linear_dataset(input_context.input_pipeline_id if input_context is not None else 0)


def linear_loss(model, batch):
    x, y = batch
    return tf.reduce_mean(tf.square(model.w * x - y))


def linear_optimizer():
    return tf.keras.optimizers.legacy.SGD(LINEAR_LR)


# ------------------------------------------------------------------------------ clicks
CLICKS_BATCH = 512
CLICKS_DIM = 16
CLICKS_LR = 0.2
CLICKS_SEED = 0


def clicks_dataset_fn(num_ids: int = RECSYS_IDS):
    """Per-worker planted click batches as ``((ids, dense), labels)``."""
    def dataset_fn(input_context=None):
        stream = input_context.input_pipeline_id if input_context is not None else 0
        return clicks.train_dataset(stream, CLICKS_BATCH, CLICKS_SEED, num_ids).map(
            lambda ids, dense, labels, logits: ((ids, dense), labels))
    return dataset_fn


def clicks_eval_dataset(num_ids: int = RECSYS_IDS, examples: int = 16_384):
    return clicks.eval_dataset(examples, CLICKS_SEED, num_ids)


def build_clicks(num_ids: int = RECSYS_IDS):
    ids = tf.keras.Input([clicks.NUM_SLOTS], dtype=tf.int64)
    dense = tf.keras.Input([clicks.NUM_DENSE])
    emb = tf.keras.layers.Embedding(num_ids, CLICKS_DIM, name="ids")(ids)
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
    h = tf.keras.layers.Dense(256, activation="relu")(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1)(h))


def clicks_optimizer():
    return tf.keras.optimizers.legacy.Adagrad(CLICKS_LR)


def clicks_auc(predict, num_ids: int = RECSYS_IDS):
    """(AUC, oracle AUC) of ``predict(ids, dense) -> logits`` on the held-out set."""
    pos = neg = opos = oneg = 0.0
    for ids, dense, labels, logits in clicks_eval_dataset(num_ids):
        p, n = clicks.histograms(tf.sigmoid(predict(ids, dense)), labels)
        op, on = clicks.histograms(tf.sigmoid(logits), labels)
        pos, neg, opos, oneg = pos + p.numpy(), neg + n.numpy(), opos + op.numpy(), \
            oneg + on.numpy()
    return clicks.auc_from_histograms(pos, neg), clicks.auc_from_histograms(opos, oneg)


def distinct_ids(dataset_fn, batches: int, group: int) -> tuple[float, float]:
    """Mean distinct ids per batch and per `group` consecutive batches of stream 0: the rows a
    de-duplicated step, and a closure of `group` local steps, move (the run-time sizes of the
    traffic counts)."""
    ids = [np.asarray(features[0]).ravel() for features, _ in
           dataset_fn(None).take(batches)]
    per_batch = float(np.mean([np.unique(i).size for i in ids]))
    groups = [np.unique(np.concatenate(ids[k:k + group])).size
              for k in range(0, len(ids) - group + 1, group)] or [np.unique(ids[0]).size]
    return per_batch, float(np.mean(groups))


def save_graph(graph, path: str) -> None:
    """Writes a traced closure's graph and its captured handles' devices, for
    ``python -m tfps.train.traffic`` (the same two files `tfps.train.traffic.save` writes)."""
    with open(path, "wb") as f:
        f.write(graph.as_graph_def(add_shapes=True).SerializeToString())
    with open(path + ".json", "w") as f:
        json.dump({inner.op.name: getattr(outer, "device", "") or ""
                   for outer, inner in graph.captures}, f)


WORKLOADS = {
    "recsys": dict(model=build_recsys, dataset_fn=recsys_dataset_fn, loss=recsys_loss,
                   optimizer=recsys_optimizer, batch=RECSYS_BATCH),
    "clicks": dict(model=build_clicks, dataset_fn=clicks_dataset_fn, loss=recsys_loss,
                   optimizer=clicks_optimizer, batch=CLICKS_BATCH),
    "linear": dict(model=lambda num_ids=None: Linear(),
                   dataset_fn=lambda num_ids=None: linear_dataset_fn, loss=linear_loss,
                   optimizer=linear_optimizer, batch=LINEAR_BATCH),
}


# ------------------------------------------------------------------------------ placement
WORKER0 = "/job:worker/replica:0/task:0/device:CPU:0"


def variables_on_worker(strategy) -> None:
    """Places every variable `strategy` creates from now on on worker 0 instead of the ps
    tasks: the closures then run with their variables on their own device, and nothing crosses
    to a ps. A benchmark's device plan, not a way to train: it measures the work of a closure
    without the parameter traffic (`closure_vs_loop`). Every variable ParameterServerStrategy
    places goes through `_create_variable_round_robin` (parameter_server_strategy_v2.py, TF
    2.21: whole variables and each shard of a sharded one; slots colocate with their
    variable)."""
    extended = strategy.extended

    def on_worker(next_creator, **kwargs):
        with tf.device(WORKER0):
            return next_creator(**kwargs)

    extended._create_variable_round_robin = on_worker  # noqa: SLF001 - the baseline's placement


# ------------------------------------------------------------------------------ fit
class EpochTimer(tf.keras.callbacks.Callback):
    """Wall time of each epoch, for steady-state `fit` throughput (same on both sides)."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []
        self.start = None
        self.meter = CpuMeter()  # from the end of the first epoch (tracing) to the last

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())
        if len(self.ends) == 1:
            self.meter.start()

    def on_train_end(self, logs=None):
        if self.ends:
            self.meter.stop()


# ------------------------------------------------------------------------------ reporting
def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


class CpuMeter:
    """CPU seconds of this process and of the cluster's servers (``BENCH_PIDS``, set by the
    harness: ``{"ps0": pid, "worker0": pid, ...}``), read from /proc around timed windows.
    `fields(steps)` gives ``cpu_<process>=<ms per step>`` for the `report` line; outside a
    cluster it measures this process alone (``cpu_chief``)."""

    def __init__(self):
        self.pids = dict(json.loads(os.environ.get("BENCH_PIDS", "{}")), chief=os.getpid())
        self.used = {name: 0.0 for name in self.pids}
        self._start = None

    @staticmethod
    def _seconds(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._start = {name: self._seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        for name, pid in self.pids.items():
            self.used[name] += self._seconds(pid) - self._start[name]

    def fields(self, steps: int) -> dict:
        return {f"cpu_{name}": f"{1e3 * used / max(steps, 1):.3f}"
                for name, used in self.used.items()}


def report(rates, timed=None, **extra):
    """The one machine-readable line every benchmark program prints: ``bench: ...``
    (`timed`: seconds spent in the timed windows, the rest of the process's life is set-up)."""
    fields = [f"steps_per_sec={median(rates):.3f}", f"timed={timed or 0:.1f}",
              "windows=" + ",".join(f"{r:.3f}" for r in rates)]
    fields += [f"{k}={v}" for k, v in extra.items()]
    print("bench: " + " ".join(fields), flush=True)


def measure_windows(run, warmup_steps, steps, windows, **extra):
    """Calls ``run(warmup_steps)`` once (tracing, pipelines filling), then ``run(steps)``
    `windows` times, timing each; prints the `report` line (with `extra` fields, or those a
    callable `extra` value returns afterwards). ``run(n)`` returns steps done."""
    run(warmup_steps)
    rates, timed, meter, total = [], [], CpuMeter(), 0
    for _ in range(windows):
        meter.start()
        start = time.perf_counter()
        done = run(steps)
        timed.append(time.perf_counter() - start)
        meter.stop()
        rates.append(done / timed[-1])
        total += done
    report(rates, timed=sum(timed), **meter.fields(total),
           **{k: v() if callable(v) else v for k, v in extra.items()})


def add_common_flags(parser):
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="recsys")
    parser.add_argument("--num_ids", type=int, default=RECSYS_IDS)
    parser.add_argument("--warmup_steps", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=1, help="timed windows (median)")
    parser.add_argument("--steps_per_closure", type=int, default=10)
    parser.add_argument("--graph_out", help="write the traced closure graph here")
    parser.add_argument("--on_worker", action="store_true",
                        help="variables on worker 0, not on ps (`variables_on_worker`)")
    return parser
