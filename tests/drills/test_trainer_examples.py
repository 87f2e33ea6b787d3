"""The Trainer's examples through tfps-launch: Keras 3, and recsys surviving a ps kill."""

from __future__ import annotations

import os

import pytest
from conftest import REPO, assert_all_dead, result_line

RECSYS = os.path.join(REPO, "examples", "recsys.py")
KERAS3 = os.path.join(REPO, "examples", "keras3_trainer.py")


def _chief_result(run) -> dict:
    lines = [l[len("[chief] "):] for l in run.output.splitlines() if l.startswith("[chief] ")]
    results = [l for l in lines if l.startswith("result:")]
    assert results, run.output[-4000:]
    return result_line(results[-1])


# recsys.py resuming from its checkpoint (start_step, AUC >= 0.98 x oracle, placement) is
# tests/drills/test_export_reshard.py, on 2, then 3, then 1 ps tasks.


def test_keras3_trainer_via_tfps_launch(launch):
    run = launch("--num-ps", "2", "--num-workers", "2", KERAS3, "--train_steps=300")
    assert run.wait(180) == 0, run.output[-4000:]
    result = _chief_result(run)
    assert result["loss_last"] < 0.5 * result["loss_first"], result
    assert "keras 3." in run.output and "optimizer tf_keras" in run.output
    assert_all_dead([pid for _, pid in run.started()])


@pytest.mark.slow
@pytest.mark.drill
def test_recsys_survives_a_ps_kill(launch, tmp_path):
    """The Trainer path through a ps failure: the ps is SIGKILLed (by pid, from outside) after
    the first checkpoint; the launcher restarts it and the chief, which resumes from the
    checkpoint and finishes every step."""
    import signal
    import time

    model_dir = tmp_path / "model"
    run = launch("--num-ps", "2", "--num-workers", "2", RECSYS, "--num_ids=20000",
                 f"--model_dir={model_dir}", "--checkpoint_every=100", "--eval_examples=8192",
                 "--steps_per_closure=20", "--log_every=100", "--train_steps=700")
    state = model_dir / "checkpoints" / "checkpoint"
    deadline = time.monotonic() + 240
    while not state.exists():
        assert time.monotonic() < deadline and run.proc.poll() is None, run.output[-4000:]
        time.sleep(0.2)
    os.kill(run.pid_of("ps:0"), signal.SIGKILL)
    assert run.wait(300) == 0, run.output[-4000:]
    assert "ps:0 died (SIGKILL); restarting ps:0 and chief (restart 1/3)" in run.output
    result = _chief_result(run)
    assert result["steps"] == 700 and result["start_step"] >= 100, result
    # As good as the undisturbed run of the same length (test_recsys_learns_and_resumes:
    # >= 0.9 of the oracle at 700 steps); steps after the last checkpoint were redone.
    assert result["auc"] >= 0.9 * result["oracle_auc"], result
    print(f"recsys after a ps kill: {result}")
    assert_all_dead([pid for _, pid in run.started()])
