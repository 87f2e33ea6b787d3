"""The examples, run for real: each on a multi-process cluster, checked by its `result:` line."""

from __future__ import annotations

import os
import sys
import time

from conftest import REPO, assert_all_dead, result_line, run_chief

LINEAR_REGRESSION = os.path.join(REPO, "examples", "linear_regression.py")


def test_linear_regression_via_tfps_launch_default_cluster(launch):
    started = time.monotonic()
    run = launch("--num-ps", "2", "--num-workers", "2", LINEAR_REGRESSION)
    assert run.wait(120) == 0, run.output
    elapsed = time.monotonic() - started
    chief_lines = [l[len("[chief] "):] for l in run.output.splitlines()
                   if l.startswith("[chief] ")]
    assert chief_lines[-1].startswith("result:"), chief_lines[-5:]
    result = result_line(chief_lines[-1])
    assert result["steps"] == 400
    assert abs(result["w"] - result["w_lstsq"]) <= 0.01, result
    assert abs(result["w_lstsq"] - 3.0) < 0.05  # the data really is y = 3x + noise
    assert [t for t, _ in run.started()] == ["ps:0", "ps:1", "worker:0", "worker:1", "chief"]
    assert_all_dead([pid for _, pid in run.started()])
    print(f"linear_regression via tfps-launch: {elapsed:.1f}s, "
          f"|w - w_lstsq| = {abs(result['w'] - result['w_lstsq']):.6f}")


def test_linear_regression_resumes_from_its_checkpoint(local_cluster, tmp_path):
    cluster = local_cluster(num_ps=1, num_workers=1)
    argv = [sys.executable, LINEAR_REGRESSION, "--model_dir", str(tmp_path / "model"),
            "--checkpoint_every", "100", "--seed", "3"]
    first = run_chief([*argv, "--train_steps", "200"], cluster, timeout=180)
    assert first.returncode == 0, first.stdout[-3000:]
    assert result_line(first.stdout)["steps"] == 200
    assert sorted(os.listdir(tmp_path / "model"))[0] == "checkpoint"
    second = run_chief([*argv, "--train_steps", "300"], cluster, timeout=180)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "ckpt-200 at step 200" in second.stdout
    result = result_line(second.stdout)
    assert result["steps"] == 300  # 200 restored + 100 more, not 300 more
    assert abs(result["w"] - result["w_lstsq"]) <= 0.01, result
