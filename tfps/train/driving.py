"""How the Trainer drives its loop: the `LoopTrainer` the loop sees, the side work it runs
(`Action`s), the preemption stop and, under ``tfps-launch``, hang tracking and live metrics.

Kept beside the Trainer's facade (`tfps.train.trainer`) so that the facade reads as the
public API: this module is the wiring between its rooms and `tfps.train.loop.TrainLoop`.
"""

from __future__ import annotations

from collections.abc import Callable

from tfps.train import health
from tfps.train.closures import Closures
from tfps.train.loop import Action, TrainLoop
from tfps.train.options import TrainerOptions
from tfps.train.preemption import PREEMPTION

__all__ = ["drive"]


class _LoopSide:
    """The Trainer as its loop drives it (`tfps.train.loop.LoopTrainer`): the closures, the
    cluster's join, the checkpoint write and the record's values."""

    def __init__(self, *, closures: Closures, coordinator, num_workers: int,
                 closure_steps: int | None, measures_staleness: bool, save, record_values):
        self.num_workers = num_workers
        self.closure_steps = closure_steps
        self.measures_staleness = measures_staleness
        self.schedule = closures.schedule
        self.use_packing = closures.use_packing
        self.join = coordinator.join
        self.save = save
        self.record_values = record_values


def drive(*, options: TrainerOptions, model_dir: str | None, closures: Closures, coordinator,
          num_workers: int, measures_staleness: bool, dynamic, before_save_input: Callable,
          sync_model: Callable, save: Callable, record_values: Callable,
          traffic: Callable) -> tuple[TrainLoop, object]:
    """``(the loop, its health tracking)`` of one Trainer.

    Args:
      options: the Trainer's options (cadences, mode).
      model_dir: where summaries go, or None.
      closures: the Trainer's closures (`tfps.train.closures.Closures`).
      coordinator: the ClusterCoordinator (its join).
      num_workers: workers in the cluster.
      measures_staleness: whether closures return their updates' τ.
      dynamic: the model's `DynamicTables` (`tfps.train.dynamic`).
      before_save_input: ``fn(step)``: the input's state written before a checkpoint (a file
        input's ledger).
      sync_model: writes fused buffers into the model's variables.
      save: ``save(step)``: the step counter and a checkpoint.
      record_values: ``record_values(step, rate, loss) -> {name: value}``.
      traffic: ``traffic()``: the closure's per-step traffic (for the metrics).
    """
    actions = []
    if dynamic.active:  # rows over a cap or a TTL reach no checkpoint, no export
        actions.append(Action("evict DynamicEmbedding rows", dynamic.maintain,
                              every=dynamic.interval))
        actions.append(Action("evict DynamicEmbedding rows before a save", dynamic.evict,
                              before_save=True))
    actions.append(Action("write the input's ledger", before_save_input, before_save=True))
    if options.fuse_dense:
        actions.append(Action("write fused buffers into the model",
                              lambda step: sync_model(), before_save=True))
    side = _LoopSide(closures=closures, coordinator=coordinator, num_workers=num_workers,
                     closure_steps=options.mode.closure_steps,
                     measures_staleness=measures_staleness, save=save,
                     record_values=record_values)
    PREEMPTION.install()  # SIGUSR1: a checkpoint and exit 138 (tfps.train.preemption)
    loop = TrainLoop(trainer=side, options=options, model_dir=model_dir, actions=actions,
                     stop=PREEMPTION)
    # Under tfps-launch: hang tracking per worker and live metrics (tfps.train.health).
    tracking = health.attach(loop=loop, coordinator=coordinator, num_workers=num_workers,
                             traffic=traffic)
    return loop, tracking
