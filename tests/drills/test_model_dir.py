"""One writer per model_dir and storage errors in one line (issue 22), with real launches of
``examples/recsys.py``: a second job on a live model_dir exits 2 with one line while the first
ends with its exact step count; a model_dir on a full filesystem ends with one line naming
the checkpoint and the last good one, which then restores (and an export onto it, one line
too). And the start of a launch is
quiet: no TF C++ log line of a task's start reaches the terminal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import REPO, assert_all_dead, assert_lease_refused, chief_result, task_env

RECSYS = os.path.join(REPO, "examples", "recsys.py")
EXAMPLE = os.path.join(REPO, "examples", "linear_regression.py")



def small_recsys(model_dir, steps, *extra):
    return ("--num-ps", "1", "--num-workers", "1", RECSYS, "--train_steps", str(steps),
            "--num_ids", "20000", "--log_every", "500", "--model_dir", str(model_dir), *extra)


@pytest.mark.drill
def test_a_second_job_on_a_live_model_dir_exits_2_and_the_first_is_untouched(launch,
                                                                           tmp_path):
    model_dir = tmp_path / "model"
    first = launch(*small_recsys(model_dir, 2500, "--checkpoint_every", "500"))
    deadline = time.monotonic() + 120
    while not (model_dir / ".tfps-lease").exists():
        assert first.proc.poll() is None and time.monotonic() < deadline, first.output[-3000:]
        time.sleep(0.2)
    started = time.monotonic()
    second = launch(*small_recsys(model_dir, 100))
    assert second.wait(60) == 2, second.output[-3000:]
    assert time.monotonic() - started < 60
    assert_lease_refused(second.output, model_dir)
    assert "Traceback" not in second.output
    assert first.wait(240) == 0, first.output[-3000:]
    assert chief_result(first.output)["steps"] == 2500
    names = sorted(os.listdir(model_dir / "checkpoints"))
    assert not [n for n in names if n.endswith("_temp")]
    assert_all_dead([pid for r in (first, second) for _, pid in r.started()])


@pytest.fixture
def small_filesystem():
    """A 8 MiB tmpfs (root only): room for two checkpoints of a 20 000-row recsys model."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    path = tempfile.mkdtemp(prefix="tfps-full-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", path]).returncode:
        os.rmdir(path)
        pytest.skip("cannot mount a tmpfs here")
    yield path
    subprocess.run(["umount", "-l", path])
    os.rmdir(path)


@pytest.mark.drill
def test_a_full_filesystem_is_one_line_and_the_last_good_checkpoint_restores(
        launch, tmp_path, small_filesystem):
    model_dir = os.path.join(small_filesystem, "model")
    run = launch(*small_recsys(model_dir, 1000, "--checkpoint_every", "200"))
    assert run.wait(240) == 1, run.output[-3000:]  # permanent: nothing is restarted
    [line] = [text for text in run.output.splitlines() if " failed: " in text]
    found = re.fullmatch(rf"\[chief\] tfps: checkpoint {model_dir}/checkpoints/ckpt-(\d+) "
                         rf"failed: No space left on device; the last good checkpoint is "
                         rf"ckpt-(\d+)", line)
    assert found, line
    assert int(found.group(2)) < int(found.group(1))
    assert "Traceback" not in run.output and "restarting" not in run.output
    names = os.listdir(os.path.join(model_dir, "checkpoints"))
    assert not [n for n in names if n.endswith("_temp")], names  # the partial one is gone
    export = subprocess.run(
        [sys.executable, "-m", "tfps.export", "--model_dir", model_dir, "--model",
         f"{RECSYS}:build_model", "--out", str(tmp_path / "export"), "--", "--num_ids=20000"],
        cwd=REPO, env=task_env(), capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr[-3000:]
    assert export.stdout.strip().endswith(f"checkpoints/ckpt-{found.group(2)}")
    with open(os.path.join(small_filesystem, "filler"), "wb") as f:  # now truly full
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    out = os.path.join(small_filesystem, "export")
    export = subprocess.run(
        [sys.executable, "-m", "tfps.export", "--model_dir", model_dir, "--model",
         f"{RECSYS}:build_model", "--out", out, "--", "--num_ids=20000"],
        cwd=REPO, env=task_env(), capture_output=True, text=True, timeout=120)
    assert export.returncode == 1, export.stderr[-3000:]
    assert export.stderr.splitlines()[-1] == (
        f"tfps: export {out} failed: No space left on device; nothing was written")
    assert "Traceback" not in export.stderr
    assert sorted(os.listdir(small_filesystem)) == ["filler", "model"]  # no temporary left


@pytest.mark.drill
def test_the_start_of_a_launch_shows_no_tf_cpp_log_line(launch):
    """What ./demo.sh runs: 2 ps + 2 workers of the linear regression example."""
    run = launch("--num-ps", "2", "--num-workers", "2", EXAMPLE)
    assert run.wait(180) == 0, run.output[-3000:]
    glog = re.compile(r"^\[[\w:]+\] [IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ", re.M)
    assert not glog.findall(run.output), run.output
    assert "absl::InitializeLog" not in run.output
    assert "result:" in run.output
