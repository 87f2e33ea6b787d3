"""examples/keras_fit.py on real multi-process clusters (python -m tfps.server tasks), with the
side-car evaluator, on MNIST through tfds's mock, and resuming after the chief is SIGKILLed."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, kill_group, result_line, run_chief, task_env

EXAMPLE = os.path.join(REPO, "examples", "keras_fit.py")
# The acceptance bar: the model trained through the ps tasks must reach 95 % of the accuracy
# of the teacher that generated the synthetic labels.
QUALITY = 0.95


def _check_accuracy(result: dict) -> None:
    assert result["accuracy"] >= QUALITY * result["best_accuracy"], result


def test_keras_fit_on_two_ps_two_workers_with_sidecar_evaluator(local_cluster, procs,
                                                                tmp_path):
    cluster = local_cluster(num_ps=2, num_workers=2, evaluator=True)
    model_dir = str(tmp_path / "model")
    args = ["--model_dir", model_dir, "--epochs", "4", "--steps_per_epoch", "100"]
    evaluator_log = open(tmp_path / "evaluator.log", "w+")
    evaluator = procs.start([sys.executable, EXAMPLE, *args], cwd=REPO,
                            env=task_env(cluster.tf_config("evaluator", 0)),
                            stdout=evaluator_log, stderr=subprocess.STDOUT)
    start = time.monotonic()
    chief = run_chief([sys.executable, EXAMPLE, *args], cluster, timeout=300)
    wall = time.monotonic() - start
    assert chief.returncode == 0, chief.stdout[-4000:]
    result = result_line(chief.stdout)
    print(f"chief: {result} in {wall:.1f}s")
    _check_accuracy(result)
    epochs = [l for l in chief.stdout.splitlines() if l.startswith("fit | epoch:")]
    assert len(epochs) == 4 and "step: 400" in epochs[-1]
    assert "eval | exactly once over 10 shards" in chief.stdout

    # The side-car stops by itself once it has evaluated ckpt-4 (max_evaluations=epochs).
    try:
        evaluator.wait(120)
    except subprocess.TimeoutExpired:
        pass
    evaluator_log.seek(0)
    evaluator_out = evaluator_log.read()
    assert evaluator.returncode == 0, evaluator_out[-4000:]
    assert re.search(r"^evaluator \| step: 400 \| loss: [\d.]+ \| accuracy: ", evaluator_out,
                     re.M), evaluator_out[-3000:]
    side = result_line(evaluator_out)
    # The side-car evaluated the same final weights on the same data as the chief.
    assert side["accuracy"] == pytest.approx(result["accuracy"], abs=1e-3)


# tfds's default mock builds its examples with `Dataset.from_generator`, a Python generator
# that only runs in the process that defined it, so it cannot be sent to worker processes
# (and on an in-process cluster its iterator can deadlock the worker when destroyed: see
# tfps.strategy._worker_inter_op_threads). This `as_dataset_fn` -- the manual form of
# `tfds.testing.mock_data` -- makes random examples shaped by the builder's features as
# tensors instead, so `tfds.load` feeds real ps/worker processes.
_MNIST_MOCK = """
import faulthandler, runpy, sys
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
faulthandler.dump_traceback_later(240, exit=True, file=open(sys.argv[1], "w"))

def as_dataset(self, split, **kwargs):
    features = self.info.features
    rng = np.random.default_rng(0 if str(split) == "train" else 1)
    return tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 256, (320, *features["image"].shape), dtype=np.uint8),
        "label": rng.integers(0, features["label"].num_classes, 320)})

sys.argv = [sys.argv[2], "--dataset=mnist", "--epochs=2", "--steps_per_epoch=10",
            "--batch_size=16", "--eval_batch_size=16", "--warmup_steps=0"]
with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_keras_fit_mnist_through_tfds_mock(local_cluster, tmp_path):
    """`--dataset=mnist` through the real `tfds.load` path (features, splits, as_supervised),
    with the data faked by `tfds.testing.mock_data`, on real ps/worker processes."""
    cluster = local_cluster(num_ps=2, num_workers=2)
    stacks = tmp_path / "stacks.txt"  # every thread's stack, innermost first, if it hangs
    chief = run_chief([sys.executable, "-c", _MNIST_MOCK, str(stacks), EXAMPLE], cluster,
                      timeout=300)
    dump = stacks.read_text() if stacks.exists() else ""
    assert chief.returncode == 0, f"{chief.stdout[-3000:]}\n--- thread stacks ---\n{dump[:12000]}"
    result = result_line(chief.stdout)
    assert 0.0 <= result["accuracy"] <= 1.0  # random images: any accuracy is honest
    assert math.isnan(result["best_accuracy"])
    assert "fit | epoch: 2/2 | step: 20" in chief.stdout
    # 320 test examples in batches of 16 = 20 batches: 5 shards per worker fit.
    assert "eval | exactly once over 10 shards" in chief.stdout


class _Lines:
    """Collects a process's output lines on a thread; `wait_for` a regex with a timeout."""

    def __init__(self, proc):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(re.search(pattern, l) for l in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {pattern!r} after {timeout}s:\n" + "\n".join(self.lines[-60:]))
                self._cond.wait(min(left, 0.5))


@pytest.mark.slow
@pytest.mark.drill
def test_fit_resumes_after_chief_sigkill(local_cluster, procs, tmp_path):
    """The chief is SIGKILLed mid-training and restarted with the same --model_dir; the ps and
    worker servers stay up, as they do when Kubeflow or tfps-launch restart only the chief:
    the new coordinator attaches to the live servers and creates its variables afresh, and
    BackupAndRestore restores weights, optimizer state and the epoch counter."""
    cluster = local_cluster(num_ps=2, num_workers=2)
    model_dir = str(tmp_path / "model")
    epochs = 8
    args = [sys.executable, EXAMPLE, "--model_dir", model_dir, "--epochs", str(epochs),
            "--steps_per_epoch", "100"]
    first = procs.start(args, cwd=REPO, env=task_env(cluster.tf_config("chief", 0)),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = _Lines(first)
    lines.wait_for(rf"^fit \| epoch: 2/{epochs} ", timeout=180)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert first.returncode == -signal.SIGKILL
    done_before = max(int(m.group(1)) for m in (re.match(r"^fit \| epoch: (\d+)/", l)
                                                 for l in lines.lines) if m)
    assert done_before < epochs, "training finished before the kill: not a mid-training kill"
    assert os.path.isdir(os.path.join(model_dir, "backup"))

    second = run_chief(args, cluster, timeout=300)
    assert second.returncode == 0, second.stdout[-4000:]
    resumed = [int(m.group(1)) for m in (re.match(r"^fit \| epoch: (\d+)/", l)
                                         for l in second.stdout.splitlines()) if m]
    # It picks up after the last backed-up epoch (the one being trained at the kill is redone).
    assert resumed and resumed[0] > 1 and resumed[0] <= done_before + 1, resumed
    assert resumed[-1] == epochs
    assert f"step: {epochs * 100}" in [l for l in second.stdout.splitlines()
                                       if l.startswith(f"fit | epoch: {epochs}/")][0]
    _check_accuracy(result_line(second.stdout))


def test_keras_fit_through_tfps_launch(procs, tmp_path):
    argv = [sys.executable, "-m", "tfps.launch", "--log-dir", str(tmp_path / "logs"),
            "--num-ps", "2", "--num-workers", "2", EXAMPLE, "--epochs", "3",
            "--steps_per_epoch", "100"]
    proc = procs.start(argv, cwd=REPO, env=task_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, out[-4000:]
    # The launcher prefixes task output ("[chief]: ..."); find the chief's result line.
    results = [l[l.index("result:"):] for l in out.splitlines() if "result:" in l]
    assert results, out[-4000:]
    _check_accuracy(result_line(results[-1]))
