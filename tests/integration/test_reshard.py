"""Resharding: a ``model_dir`` written with N ps tasks resumes with M (2 -> 3 -> 1), model
variables and optimizer slots included, row for row, for `tfps.Trainer` (a tf_keras model with
Adagrad, a Keras 3 model with Adam) and `tfps.keras.fit` (`BackupAndRestore`, Adam).

Each chief is its own process (``reshard_job.py``) with its own in-process cluster: TF cannot
stop in-process servers, and a restore must meet ps tasks that never held the variables. The
first restores a 2-ps checkpoint onto 3 ps tasks (M > N), the second that job's 3-ps
checkpoint onto 1 (M < N). keras-team/tf-keras#838: without the slots made before the restore,
the per-shard slots do not exist when the restore is done (their values went elsewhere) and the
first update makes fresh ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
from conftest import REPO, communicate, kill_group, task_env

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reshard_job.py")
KINDS = {"tfk": ("accumulator",), "k3": ("m", "v"), "fit": ("m", "v")}
# What a slot holds before its row's first update (tf_keras Adagrad starts at 0.1).
INITIAL = {"accumulator": np.float32(0.1), "m": 0.0, "v": 0.0}


def _chief(num_ps: int, model_dir, epochs: int, out) -> tuple[str, dict, float]:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, JOB, "--num_ps", str(num_ps), "--dir",
                             str(model_dir), "--epochs", str(epochs), "--out", str(out)],
                            cwd=REPO, env=task_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output = communicate(proc, 300, f"the chief on {num_ps} ps")
    finally:
        kill_group(proc)
    assert proc.returncode == 0 and "done" in output, output[-4000:]
    with np.load(out) as records:
        return output, dict(records), time.monotonic() - start


def _tables(output: str) -> dict[str, str]:
    """The variable table the job printed for each Trainer model."""
    tables, name = {}, None
    for line in output.splitlines():
        if line.startswith("table "):
            name = line.split()[1]
            tables[name] = ""
        elif name and line.startswith(("variable", " ", "emb", "dense", "total")):
            tables[name] += line + "\n"
    return tables


def _assert_restored(before: dict, after: dict) -> int:
    """Everything `before` ended with is what `after` restored, exactly; returns the count."""
    checked = 0
    for key, value in before.items():
        if "|after|" not in key:
            continue
        restored = key.replace("|after|", "|restored|")
        assert restored in after, restored
        np.testing.assert_array_equal(after[restored], value, err_msg=restored)
        checked += 1
    return checked


def test_variables_and_slots_survive_2_to_3_to_1_ps(tmp_path):
    model_dir = tmp_path / "run"
    out2, on2, s2 = _chief(2, model_dir, 2, tmp_path / "2.npz")
    out3, on3, s3 = _chief(3, model_dir, 3, tmp_path / "3.npz")
    out1, on1, s1 = _chief(1, model_dir, 4, tmp_path / "1.npz")
    print(f"chiefs on 2, 3, 1 ps: {s2:.1f}s, {s3:.1f}s, {s1:.1f}s")

    checked = _assert_restored(on2, on3) + _assert_restored(on3, on1)
    # What was compared is real: every slot of every model, the table whole (not a shard).
    for kind, slots in KINDS.items():
        for slot in slots:
            rows = on3[f"{kind}|restored|emb/embeddings|{slot}"]
            assert rows.shape == (20_000, 8), (kind, slot, rows.shape)
            touched = np.abs(rows - INITIAL[slot]).max(axis=1) > 0  # rows with updates
            assert touched.sum() > 1000, (kind, slot, touched.sum())
        assert f"{kind}|restored|loss" in on1 and on1[f"{kind}|restored|iterations"] > 0
    assert checked >= 2 * 3 * 12, checked
    # The step counts went on (the Trainer's step, and fit's iterations: 10 steps an epoch).
    assert (int(on3["tfk|restored|step"]), int(on1["tfk|restored|step"])) == (40, 80)
    assert (int(on3["fit|restored|iterations"]), int(on1["fit|restored|iterations"])) == (20, 30)
    # The first loss after resuming is the last one before it (the same fixed batch).
    for kind in KINDS:
        assert on3[f"{kind}|restored|loss"] == on2[f"{kind}|after|loss"]

    # The variable tables show the new placement: three shards on three ps, then one whole.
    for kind in ("tfk", "k3"):
        table3, table1 = _tables(out3)[kind], _tables(out1)[kind]
        assert "0/3" in table3 and "2/3" in table3, table3
        assert "/job:ps/replica:0/task:2/" in table3, table3
        assert "/part_" not in table1 and " 0/" not in table1, table1
        assert "/job:ps/replica:0/task:1/" not in table1, table1
