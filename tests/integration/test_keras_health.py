"""`tfps.keras.fit` under the Trainer's reliability rules on an in-process cluster: the chief's
reports and Prometheus metrics where the launcher asks for them (`tfps.keras.health`), the
lease of the model_dir taken and released, a live lease of another process refused with one
line and exit 2 before anything is written, and a lost lease stopping the epoch's writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

import tfps
import tfps.keras
from tfps.checkpoints import lease as leases
from tfps.launch.run import channel

EPOCHS, STEPS = 3, 20


@pytest.fixture(scope="module")
def strategy():
    return tfps.keras.make_strategy(tfps.in_process_cluster(num_ps=1, num_workers=2))


def _model(strategy):
    import tf_keras

    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
        model.compile(tf_keras.optimizers.legacy.SGD(tfps.schedules.get(
                          "constant", initial_learning_rate=0.5, warmup_steps=5)),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      steps_per_execution=tfps.keras.steps_per_execution(STEPS, strategy))
    return model


def _data():
    import tensorflow as tf

    x = tf.random.stateless_normal([512, 4], seed=[1, 2])
    return tf.data.Dataset.from_tensor_slices((x, tf.cast(x[:, 0] > 0, tf.int64))
                                              ).repeat().batch(32)


def _read(path, *lines, timeout=5.0) -> str:
    """The file at `path` once every one of `lines` is a line of it (the chief rewrites it
    every second, and the last epoch's record and its checkpoint may land one rewrite apart)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if set(lines) <= set(text.splitlines()) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_fit_reports_to_its_launcher_and_serves_the_trainers_metrics(strategy, tmp_path,
                                                                     monkeypatch):
    # What tfps-launch --metrics-port puts in the chief's environment.
    monkeypatch.setenv(channel.HEALTH_FILE_ENV, str(tmp_path / "report.json"))
    monkeypatch.setenv(channel.METRICS_FILE_ENV, str(tmp_path / "metrics.prom"))
    model_dir = tmp_path / "model"
    model = _model(strategy)
    tfps.keras.fit(model, _data, epochs=EPOCHS, steps_per_epoch=STEPS,
                   model_dir=str(model_dir))
    expected = ("tfps_steps_total 60.0", "tfps_checkpoints_total 3.0", "tfps_learning_rate 0.5")
    text = _read(tmp_path / "metrics.prom", *expected)
    lines = text.splitlines()
    for line in expected:
        assert line in lines, text
    values = {m.group(1): float(m.group(2))
              for m in re.finditer(r"^(tfps_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}
    assert 0 < values["tfps_loss"] < 1 and values["tfps_steps_per_second"] > 0
    assert values["tfps_checkpoint_seconds"] > 0
    closures = sum(v for k, v in values.items() if k.startswith("tfps_worker_closures_done"))
    assert closures >= EPOCHS  # at least one closure per epoch, counted per worker
    report = channel.read_report(str(tmp_path / "report.json"))
    assert report.step == 60 and report.hung == () and time.time() - report.heartbeat < 5
    assert not (model_dir / leases.LEASE_FILE).exists()  # released when fit returned


def test_a_live_lease_of_another_job_is_one_line_and_exit_2(strategy, tmp_path, capfd):
    model_dir = tmp_path / "model"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tfps.checkpoints import lease\n"
         "lease.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)",
         str(model_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(leases.ModelDirInUse) as raised:
            tfps.keras.fit(_model(strategy), _data, epochs=1, steps_per_epoch=STEPS,
                           model_dir=str(model_dir))
    finally:
        holder.kill()
        holder.wait()
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert [line for line in err.splitlines() if "is in use by another job" in line] == [
        raised.value.message]
    assert sorted(os.listdir(model_dir)) == [leases.LEASE_FILE]  # nothing written


def test_a_lost_lease_stops_the_epochs_writes(strategy, tmp_path):
    import dataclasses

    import tf_keras

    model_dir = tmp_path / "model"
    path = model_dir / leases.LEASE_FILE

    class TakeOver(tf_keras.callbacks.Callback):
        """Another job takes the lease over during the second epoch (as one does after this
        chief was frozen for STALE_S), and this chief's renewal notices."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                holder = leases.Holder.from_json(path.read_bytes())
                path.write_bytes(dataclasses.replace(holder, token="another").to_json())
                time.sleep(leases.HEARTBEAT_S + 1)

    with pytest.raises(leases.LeaseLost, match="lost its lease"):
        tfps.keras.fit(_model(strategy), _data, epochs=3, steps_per_epoch=STEPS,
                       model_dir=str(model_dir), callbacks=[TakeOver()])
    saved = sorted(f for f in os.listdir(model_dir / "checkpoints") if f.endswith(".index"))
    assert saved == ["ckpt-1.index"]  # the second epoch wrote nothing
    assert leases.Holder.from_json(path.read_bytes()).token == "another"  # left to its holder
