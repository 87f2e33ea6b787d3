"""Strategy builder, partitioner, in-process cluster and the task server, on real clusters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_chief

import tfps
from tfps import errors


@pytest.fixture(scope="module")
def strategy():
    import tensorflow as tf  # noqa: F401
    return tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=2))


def test_sharded_variable_trains_on_in_process_cluster(strategy):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    num_ids, dim = 20_000, 8  # 640 KB table: two >= 256 KiB shards, one per ps
    target = rng.normal(size=(num_ids,)).astype("float32")
    with strategy.scope():
        table = tf.Variable(tf.zeros([num_ids, dim]), name="table")
        head = tf.Variable(tf.ones([dim, 1]) * 0.125, name="head")
    parts = table.variables
    assert len(parts) == 2
    assert {p.device for p in parts} == {"/job:ps/replica:0/task:0/device:CPU:0",
                                         "/job:ps/replica:0/task:1/device:CPU:0"}
    table_text = tfps.variable_table([table, head])
    assert "table" in table_text and "0/2" in table_text and "1/2" in table_text
    coordinator = tfps.make_coordinator(strategy)
    assert tfps.make_coordinator(strategy) is coordinator

    def dataset_fn(_):
        ids = rng.integers(0, 500, size=4096)  # a small, learnable subset of rows
        return tf.data.Dataset.from_tensor_slices((ids, target[ids])).repeat().batch(64)

    iterator = iter(coordinator.create_per_worker_dataset(
        lambda: strategy.distribute_datasets_from_function(dataset_fn)))

    @tf.function
    def train_steps(iterator):
        def step(ids, y):
            with tf.GradientTape() as tape:
                emb = tf.nn.embedding_lookup(table, ids)
                loss = tf.reduce_mean(tf.square(tf.squeeze(emb @ head, 1) - y))
            # The gradient is taken per shard: a ShardedVariable has no single handle.
            grads = tape.gradient(loss, list(table.variables) + [head])
            for var, grad in zip(list(table.variables) + [head], grads):
                if isinstance(grad, tf.IndexedSlices):  # embedding rows stay sparse
                    var.scatter_sub(tf.IndexedSlices(32.0 * grad.values, grad.indices))
                else:
                    var.assign_sub(0.01 * grad)
            return loss
        losses = [strategy.run(step, args=next(iterator)) for _ in range(10)]
        return losses[0], losses[-1]

    first = coordinator.schedule(train_steps, args=(iterator,))
    coordinator.join()
    for _ in range(15):
        last = coordinator.schedule(train_steps, args=(iterator,))
    coordinator.join()
    loss_first = float(first.fetch()[0])
    loss_last = float(last.fetch()[1])
    assert loss_last < 0.5 * loss_first, (loss_first, loss_last)


def test_partitioner_off_keeps_variables_whole():
    import tensorflow as tf
    strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1),
                                  partitioner=None)
    with strategy.scope():
        table = tf.Variable(tf.zeros([20_000, 8]))
    assert not hasattr(table, "variables") or len(table.variables) == 1


@pytest.mark.parametrize("kwargs, needle", [
    ({"num_ps": 0}, "num_ps=0"), ({"num_ps": 2, "min_shard_bytes": 0}, "min_shard_bytes=0"),
    ({"num_ps": 2, "max_shards": 0}, "max_shards=0")])
def test_make_partitioner_rejects(kwargs, needle):
    with pytest.raises(errors.ConfigError, match=needle):
        tfps.make_partitioner(**kwargs)


def test_make_strategy_rejects_bad_arguments():
    with pytest.raises(errors.ConfigError, match="partitioner='big'"):
        tfps.make_strategy(tfps.Cluster.local(), partitioner="big")
    with pytest.raises(errors.ConfigError, match="Argument `cluster` must be a tfps.Cluster"):
        tfps.make_strategy({"ps": ["h:1"]})


CHIEF = """
import tfps, tensorflow as tf
strategy = tfps.make_strategy()          # from TF_CONFIG
with strategy.scope():
    v = tf.Variable(tf.zeros([100_000]))  # 400 KB: sharded over both ps tasks
coordinator = tfps.make_coordinator(strategy)
@tf.function
def add():
    for part in v.variables:
        part.assign_add(tf.ones_like(part))
for _ in range(6):
    coordinator.schedule(add)
coordinator.join()
print("devices", sorted({p.device.split("/")[1] + p.device.split("/")[3] for p in v.variables}))
print("sum", float(tf.reduce_sum(tf.concat([p.read_value() for p in v.variables], 0))))
"""


def test_task_servers_in_separate_processes(local_cluster, procs):
    cluster = local_cluster(num_ps=2, num_workers=2)
    done = run_chief([sys.executable, "-c", CHIEF], cluster, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "devices ['job:pstask:0', 'job:pstask:1']" in done.stdout
    assert "sum 600000.0" in done.stdout


def test_task_server_refuses_the_chief_role(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("chief: [localhost:1]\nps: [localhost:2]\nworker: [localhost:3]\n")
    done = subprocess.run([sys.executable, "-m", "tfps.server", "--spec", str(spec),
                           "--task", "chief"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("tfps.server: error: only ps and worker tasks run a task "
                                   "server; got task 'chief:0'")


def _server_error(*args, timeout=120):
    done = subprocess.run([sys.executable, "-m", "tfps.server", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr.strip().splitlines()[-1], done.stderr


def test_task_server_bad_flag_is_one_line():
    rc, last, stderr = _server_error("--bogus")
    assert rc == 2 and stderr.strip() == "tfps.server: error: unrecognized arguments: --bogus"


def test_task_server_port_in_use(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        busy.listen()
        port = busy.getsockname()[1]
        spec = tmp_path / "s.yaml"
        spec.write_text(f"ps: [localhost:{port}]\nworker: [localhost:1]\n")
        rc, last, stderr = _server_error("--spec", str(spec), "--task", "ps:0")
    assert rc == 2
    # Checked before TensorFlow is imported: one line, at once.
    assert last.startswith(f"tfps.server: error: cannot serve ps:0 on localhost:{port}: "
                           f"port {port} is not free"), last
    assert "Traceback" not in stderr
