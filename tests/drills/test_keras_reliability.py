"""`tfps.keras.fit` under the Trainer's reliability rules (issue 22), with real launches of a
small fit job (`keras_fit_job.py`): a second job on a live model_dir exits 2 with one line
while the first ends with its exact step count; a fit chief frozen with SIGSTOP is found by
its launcher through its reports, replaced, takes its lease over and resumes after its last
epoch, the job ending with the exact step count; its metrics are served meanwhile.

Every process is ended by its process group at teardown; a stopped one gets SIGCONT first.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request

import pytest
from conftest import REPO, assert_all_dead, assert_lease_refused, chief_result

from tfps.cluster import free_ports

JOB = os.path.join(REPO, "tests", "drills", "keras_fit_job.py")


def fit_job(model_dir, epochs: int, steps: int, pause: float, *launcher_flags):
    return ("--num-ps", "1", "--num-workers", "1", *launcher_flags, JOB, str(model_dir),
            str(epochs), str(steps), str(pause))



def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(tfps_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}



@pytest.mark.drill
def test_a_second_fit_job_on_a_live_model_dir_exits_2_and_the_first_is_untouched(launch,
                                                                                tmp_path):
    model_dir = tmp_path / "model"
    # 3 epochs with 6 s pauses: the first job holds the lease while the second starts (its
    # launcher, TensorFlow's import and the model: 5-10 s on a loaded 2-core machine).
    first = launch(*fit_job(model_dir, 3, 20, 6))
    deadline = time.monotonic() + 120
    while not (model_dir / ".tfps-lease").exists():
        assert first.proc.poll() is None and time.monotonic() < deadline, first.output[-3000:]
        time.sleep(0.2)
    second = launch(*fit_job(model_dir, 1, 20, 0))
    assert second.wait(90) == 2, second.output[-3000:]
    assert_lease_refused(second.output, model_dir)
    assert "Traceback" not in second.output and "fit | epoch" not in second.output
    assert first.wait(120) == 0, first.output[-3000:]
    assert chief_result(first.output) == {"steps": 60, "start_step": 0}
    assert not (model_dir / ".tfps-lease").exists()  # released when fit returned
    assert_all_dead([pid for r in (first, second) for _, pid in r.started()])


@pytest.mark.drill
def test_a_frozen_fit_chief_is_replaced_and_resumes_after_its_last_epoch(launch, tmp_path,
                                                                        frozen):
    [port] = free_ports(1)
    model_dir = tmp_path / "model"
    run = launch(*fit_job(model_dir, 4, 20, 1.5, "--hang-timeout", "5", "--metrics-port",
                          port))
    run.wait_for(r"^\[chief\] fit \| epoch: 1/4 \| step: 20 ", timeout=120)
    deadline = time.monotonic() + 10  # the chief rewrites its metrics every second
    while (metrics := scrape(port)).get("tfps_checkpoints_total", 0) < 1:  # epoch 1 saved
        assert time.monotonic() < deadline, metrics
        time.sleep(0.3)
    assert metrics["tfps_steps_total"] >= 20 and metrics["tfps_checkpoint_seconds"] > 0
    assert metrics['tfps_worker_closures_done_total{worker="0"}'] >= 1
    assert metrics["tfps_learning_rate"] == pytest.approx(0.01)
    assert metrics["tfps_loss"] > 0
    frozen(run.pid_of("chief"))
    stopped = time.monotonic()
    run.wait_for(r"^tfps-launch: chief hung \(no progress for \d+ s\); restarting chief",
                 timeout=60)
    print(f"fit chief hang detected {time.monotonic() - stopped:.1f} s after SIGSTOP")
    assert run.wait(120) == 0, run.output[-4000:]
    result = chief_result(run.output)
    assert result["steps"] == 80 and result["start_step"] in (20, 40, 60), result
    assert re.search(rf"^\[chief\] tfps: took over the lease of model_dir {model_dir} from "
                     rf"host \S+, pid \d+, .*\(pid \d+ is gone\)$", run.output, re.M), \
        run.output[-3000:]
    assert not (model_dir / ".tfps-lease").exists()
    assert_all_dead([pid for _, pid in run.started()])
