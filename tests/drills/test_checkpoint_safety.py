"""A chief killed (SIGKILL) while it writes a checkpoint never costs the previous one, and the
next successful save removes the ``_temp`` directory the cut save left."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, kill_group, latest_recorded, task_env

CHIEF = r"""
import sys
import tfps, tensorflow as tf

strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1))

def build():
    m = tf.Module()
    m.table = tf.Variable(tf.random.stateless_normal([400_000, 64], seed=[1, 2]))  # 100 MB
    m.w = tf.Variable(0.0)
    return m

trainer = tfps.Trainer(
    strategy=strategy, model=build, optimizer="sgd", learning_rate=0.1,
    loss_fn=lambda m, b: tf.square(m.w - b) + 0.0 * tf.reduce_sum(tf.gather(m.table, [0])),
    dataset_fn=lambda ctx: tf.data.Dataset.from_tensors(1.0).repeat(),
    model_dir=sys.argv[1],
    options=tfps.TrainerOptions(steps_per_closure=1, log_every=0, progress_bar="off"))
print("restored", trainer.restored_step, float(trainer.model.w.numpy()), flush=True)
if sys.argv[2] == "save":
    for k in range(trainer.restored_step + 1, 10_000):
        trainer.train(k)   # one short step, then a 100 MB checkpoint of step k (at train's end)
        print("saved", k, flush=True)
if sys.argv[2] == "once":  # one step and one complete save
    trainer.train(trainer.restored_step + 1)
    print("saved", trainer.restored_step + 1, flush=True)
"""

# TF writes a checkpoint's shards under "<prefix>_temp/part-*" and only then merges them into
# "<prefix>.index/.data-*" and atomically rewrites the "checkpoint" state file
# (MultiDeviceSaver.save in tensorflow/python/checkpoint/functional_saver.py;
# CheckpointManager.save -> update_checkpoint_state). A "_temp" directory on disk means a save
# is in flight.
_IN_FLIGHT = "ckpt-*_temp*"


@pytest.mark.slow
@pytest.mark.drill
def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    script = tmp_path / "chief.py"
    script.write_text(CHIEF)
    model_dir = str(tmp_path / "model")
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    for _attempt in range(2):
        proc = subprocess.Popen([sys.executable, str(script), model_dir, "save"], cwd=REPO,
                                env=task_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            # Wait for one complete save, then for the next one to be in flight: kill it there.
            deadline = time.monotonic() + 180
            saved = 0
            for line in proc.stdout:
                if line.startswith("saved"):
                    saved = int(line.split()[1])
                    break
            assert saved >= 1, "the chief never completed a save"
            before = latest_recorded(ckpt_dir)
            while not glob.glob(os.path.join(ckpt_dir, _IN_FLIGHT)):
                assert time.monotonic() < deadline and proc.poll() is None, "no save started"
                time.sleep(0.002)
            os.killpg(proc.pid, 9)
            proc.wait(10)
        finally:
            kill_group(proc)
        # The kill cut a save: its partial files are there, and the record still names the
        # last complete checkpoint.
        assert glob.glob(os.path.join(ckpt_dir, _IN_FLIGHT))
        latest = latest_recorded(ckpt_dir)
        assert latest == before >= saved
        # A fresh chief restores exactly that checkpoint: its step and its weights.
        check = subprocess.run([sys.executable, str(script), model_dir, "check"], cwd=REPO,
                               env=task_env(), capture_output=True, text=True, timeout=180)
        assert check.returncode == 0, check.stderr[-3000:]
        restored = [l for l in check.stdout.splitlines() if l.startswith("restored")][-1]
        step, w = int(restored.split()[1]), float(restored.split()[2])
        assert step == latest
        assert w == pytest.approx(1 - 0.8 ** step, rel=1e-5)  # SGD on (w - 1)^2, lr 0.1
    # The next successful save removes what the cut one left (issue 16: it stayed forever).
    stale = glob.glob(os.path.join(ckpt_dir, _IN_FLIGHT))
    assert stale
    once = subprocess.run([sys.executable, str(script), model_dir, "once"], cwd=REPO,
                          env=task_env(), capture_output=True, text=True, timeout=180)
    assert once.returncode == 0, once.stderr[-3000:]
    assert latest_recorded(ckpt_dir) == latest + 1
    assert not glob.glob(os.path.join(ckpt_dir, _IN_FLIGHT)), (stale, os.listdir(ckpt_dir))
