"""The chief's loop (`tfps.train.loop.TrainLoop`) against a fake trainer: exact step counts,
checkpoint and action cadences, nothing in flight during side work, records. Pure: the fake
closures finish when fetched."""

from __future__ import annotations

import numpy as np
import pytest

from tfps.train.loop import Action, TrainLoop
from tfps.train.options import TrainerOptions


class _Remote:
    def __init__(self, trainer, n):
        self._trainer, self.n, self.fetched = trainer, n, False

    def fetch(self):
        if not self.fetched:
            self.fetched = True
            self._trainer.finished += self.n
        return np.float32(0.5), np.arange(self.n, dtype=np.int64)


class FakeTrainer:
    """Counts what the loop asks of it; every closure of n steps finishes when fetched."""

    def __init__(self, *, closure_steps=None, workers=2, staleness=False, epoch_steps=None):
        self.epoch_steps = epoch_steps
        self.num_workers = workers
        self.closure_steps = closure_steps
        self.measures_staleness = staleness
        self.closures: list[int] = []
        self.remotes: list[_Remote] = []
        self.finished = 0
        self.saves: list[tuple[int, int]] = []   # (step, closures in flight)
        self.events: list[str] = []
        self.packing: list[int] = []
        self.joins = 0

    def in_flight(self) -> int:
        return sum(not r.fetched for r in self.remotes)

    def schedule(self, n):
        if self.epoch_steps:  # an input that ends epochs: a closure stops at the boundary
            left = self.epoch_steps - sum(self.closures) % self.epoch_steps
            n = min(n, left)
        self.closures.append(n)
        self.remotes.append(_Remote(self, n))
        return n, self.remotes[-1]

    def join(self):
        self.joins += 1
        for r in self.remotes:
            r.fetch()

    def use_packing(self, n):
        self.packing.append(n)

    def save(self, step):
        self.events.append(f"save {step}")
        self.saves.append((step, self.in_flight()))

    def record_values(self, step, rate, loss):
        return {"loss": loss}


def _loop(trainer, actions=(), **options):
    options.setdefault("progress_bar", "off")
    return TrainLoop(trainer=trainer, options=TrainerOptions(**options), model_dir=None,
                     actions=actions)


@pytest.mark.parametrize("start, total, per_closure", [(0, 1000, 7), (0, 5, 8), (333, 1000, 10),
                                                       (1000, 1000, 4)])
def test_every_step_is_counted_once_and_the_last_closure_is_short(start, total, per_closure):
    trainer = FakeTrainer(closure_steps=per_closure)
    result = _loop(trainer, checkpoint_every=100, log_every=0).run(start, total)
    assert result.step == total == start + sum(trainer.closures)
    assert all(n == per_closure for n in trainer.closures[:-1])
    assert result.start_step == start and trainer.packing == [per_closure]
    assert trainer.in_flight() == 0


def test_checkpoints_at_the_first_boundary_after_each_multiple_with_nothing_in_flight():
    trainer = FakeTrainer(closure_steps=30)
    _loop(trainer, checkpoint_every=100, log_every=0).run(0, 400)
    # Boundaries at multiples of 30: the first at or after 100, 200, 300; then the end.
    assert [s for s, _ in trainer.saves] == [120, 210, 300, 400]
    assert all(in_flight == 0 for _, in_flight in trainer.saves)


def test_actions_run_at_their_cadence_and_before_every_save_in_order():
    trainer = FakeTrainer(closure_steps=25)
    seen = []

    def action(name):
        def run(step):
            trainer.events.append(f"{name} {step}")
            seen.append((name, step, trainer.in_flight()))
        return run

    actions = [Action("evict", action("evict"), every=60),
               Action("evict before save", action("evict*"), before_save=True),
               Action("sync", action("sync"), before_save=True)]
    _loop(trainer, actions, checkpoint_every=100, log_every=0).run(0, 200)
    # The first boundary at or after 60, 120 and 180 (closures of 25 steps).
    assert [s for n, s, _ in seen if n == "evict"] == [75, 125, 200]
    assert all(in_flight == 0 for *_, in_flight in seen)
    # Before each save: the before_save actions in their order, then the save.
    assert trainer.events[trainer.events.index("save 100") - 2:
                          trainer.events.index("save 100") + 1] == [
        "evict* 100", "sync 100", "save 100"]
    assert trainer.events[-3:] == ["evict* 200", "sync 200", "save 200"]


def test_packing_measurement_trains_real_steps_that_count():
    trainer = FakeTrainer(closure_steps=None, workers=2)
    loop = _loop(trainer, checkpoint_every=None, log_every=0)
    result = loop.run(0, 500)
    assert result.step == 500 == sum(trainer.closures)
    # Calibration: closures of 1 and 8 steps, one per worker, then the chosen packing.
    assert trainer.closures[:2] == [1, 1] and 8 in trainer.closures[:10]
    assert loop.measured_packing == result.steps_per_closure == trainer.packing[-1]
    again = loop.run(500, 600)  # measured once: kept
    assert again.steps_per_closure == loop.measured_packing and again.step == 600


def test_a_run_too_short_to_measure_packs_by_the_workers():
    trainer = FakeTrainer(closure_steps=None, workers=4)
    result = _loop(trainer, checkpoint_every=None, log_every=0).run(0, 12)
    assert result.step == 12 and trainer.closures == [3, 3, 3, 3]


def test_records_carry_loss_rate_and_staleness(capsys):
    trainer = FakeTrainer(closure_steps=10, staleness=True)
    result = _loop(trainer, log_every=50, checkpoint_every=None).run(0, 120)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("train |")]
    assert [ln.split(" | ")[1] for ln in lines] == ["step: 50", "step: 100", "step: 120"]
    assert all("loss: 0.5" in ln and "steps/sec:" in ln and "staleness:" in ln for ln in lines)
    assert result.staleness.size == 120  # every update's τ (the fake returns 0..n-1)


def test_staleness_history_is_bounded(monkeypatch):
    from tfps.train import loop as loop_module
    monkeypatch.setattr(loop_module, "_KEPT_TAUS", 50)
    trainer = FakeTrainer(closure_steps=10, staleness=True)
    result = _loop(trainer, log_every=0, checkpoint_every=None).run(0, 1000)
    assert result.staleness.size == 50
    np.testing.assert_array_equal(result.staleness[-10:], np.arange(10))


def test_observers_hear_every_closure_record_and_save():
    from tfps.train.loop import LoopObserver

    class Seen(LoopObserver):
        def __init__(self):
            self.closures, self.records, self.saves = [], [], []

        def closure_done(self, step, steps, loss):
            self.closures.append((step, steps))

        def recorded(self, step, values):
            self.records.append(step)

        def saved(self, step, seconds):
            self.saves.append(step)

    seen = Seen()
    trainer = FakeTrainer(closure_steps=10)
    TrainLoop(trainer=trainer, options=TrainerOptions(log_every=50, checkpoint_every=100,
                                                      progress_bar="off"),
              model_dir=None, observers=[seen]).run(0, 230)
    assert seen.closures[-1] == (230, 10) and len(seen.closures) == 23
    assert [s for s, _ in seen.closures] == list(range(10, 231, 10))
    assert seen.records == [50, 100, 150, 200, 230] and seen.saves == [100, 200, 230]


def test_a_stop_request_saves_at_the_next_boundary_and_raises():
    from tfps.train.loop import Stopped

    trainer = FakeTrainer(closure_steps=10)
    asked = []

    def stop():
        asked.append(trainer.finished)
        return "preempted" if len(asked) == 7 else None

    loop = TrainLoop(trainer=trainer, model_dir=None, stop=stop,
                     options=TrainerOptions(checkpoint_every=None, log_every=0,
                                            progress_bar="off"))
    with pytest.raises(Stopped) as info:
        loop.run(0, 1000)
    assert info.value.step == trainer.saves[-1][0] == sum(trainer.closures) == 70
    assert trainer.in_flight() == 0 and info.value.reason == "preempted"


def test_closures_shortened_at_epoch_ends_still_count_exactly():
    trainer = FakeTrainer(closure_steps=10, epoch_steps=25)
    result = _loop(trainer, checkpoint_every=None, log_every=0).run(0, 75)
    assert result.step == 75 and trainer.closures == [10, 10, 5] * 3


def test_a_launched_chief_keeps_a_preemption_notice_until_training(monkeypatch):
    import os
    import signal

    from tfps.train import preemption

    monkeypatch.setattr(preemption, "PREEMPTION", preemption.Preemption())
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        assert not preemption.install_for_launched_chief({"TF_CONFIG": "{}"})
        worker = '{"task": {"type": "worker", "index": 0}}'
        assert not preemption.install_for_launched_chief(
            {"TF_CONFIG": worker, "TFPS_TASKS_ON_HOST": "3"})
        chief = '{"task": {"type": "chief", "index": 0}}'
        assert preemption.install_for_launched_chief(
            {"TF_CONFIG": chief, "TFPS_TASKS_ON_HOST": "3"})
        os.kill(os.getpid(), signal.SIGUSR1)  # kept, not fatal
        assert preemption.PREEMPTION() == "preempted (SIGUSR1)"
        signal.signal(signal.SIGUSR1, lambda *a: None)  # a program's own handler stays
        assert not preemption.PREEMPTION.install()
    finally:
        signal.signal(signal.SIGUSR1, previous)
