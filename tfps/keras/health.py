"""`fit`'s chief under the Trainer's reliability rules (docs/reliability.md).

* **Reports and metrics.** Under ``tfps-launch`` a Trainer's chief writes a report every
  second, so that its launcher finds it frozen, and with ``--metrics-port`` its Prometheus
  metrics (`tfps.train.health`, `tfps.train.metrics`). `fit` attaches the same, once per
  process and strategy (`watch`): the closures Keras schedules are tracked per worker on the
  strategy's coordinator, and `FitHealth` tells the chief's observers what the Trainer's loop
  tells them: at each epoch's end the exact step count (the optimizer's ``iterations``), the
  loss, steps per second and learning rate, then how long the epoch's writes (the backup and
  the ``ckpt-<epoch>`` weights) took.
* **One writer.** `fit` takes the lease of its ``model_dir`` before its first write
  (`tfps.checkpoints.lease.hold`); `FitHealth` checks it before every epoch's writes, so a
  job whose lease was taken over stops writing (`tfps.checkpoints.lease.LeaseLost`).

Under ParameterServerStrategy the step and the loss are known only at an epoch's end: the
batch logs are remote values, and reading one waits for its closure. So ``tfps_steps_total``
moves once per epoch; the per-worker closure counters move with every closure.

The Trainer's pieces are used as they are: `tfps.train.health` (beside this package in the
layer order) takes any object with the loop's ``observe``.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable

import tf_keras

from tfps import _tf
from tfps.strategy import make_coordinator
from tfps.train import health as chief_health
from tfps.train import optim_math

tf = _tf.require()

__all__ = ["FitHealth", "Observers", "watch"]


class Observers:
    """The chief's observers as `tfps.train.health.attach` adds them (``observe``), told of
    what `fit` did by `FitHealth`."""

    def __init__(self):
        self.observers: list = []

    def observe(self, observer) -> None:
        self.observers.append(observer)


# The process's attached coordinators: (weak reference, their observers). One attach per
# coordinator: a second would start a second reporter thread writing the same files.
_WATCHED: list[tuple[weakref.ref, Observers]] = []


def watch(strategy) -> Observers:
    """The observers of `strategy`'s chief, attached on first use (reports and metrics when
    the launcher asked for them, `tfps.train.health.attach`; none otherwise)."""
    coordinator = make_coordinator(strategy)  # the one Keras schedules on (one per strategy)
    for ref, observers in _WATCHED:
        if ref() is coordinator:
            return observers
    observers = Observers()
    chief_health.attach(loop=observers, coordinator=coordinator,
                        num_workers=_tf.num_workers(strategy))
    _WATCHED[:] = [(ref, o) for ref, o in _WATCHED if ref() is not None]
    _WATCHED.append((weakref.ref(coordinator), observers))
    return observers


def learning_rate(optimizer) -> float:
    """The learning rate the optimizer applies at its current step, as the Trainer's records
    read it (`tfps.train.optim_math.learning_rate`: the schedule there, a legacy ``decay``
    applied); nan for an optimizer it cannot read."""
    try:
        return float(optim_math.learning_rate(optimizer, optimizer.iterations))
    except (AttributeError, TypeError, ValueError):  # a record must not stop training
        return math.nan


class FitHealth(tf_keras.callbacks.Callback):
    """Tells the chief's observers what each epoch of `fit` did, and checks the lease before
    the epoch's writes. First in `fit`'s callbacks; `after_writes` goes right after the
    writers (`BackupAndRestore`, `EpochCheckpoint`), to time them.

    Args:
      observers: the chief's `Observers` (`watch`).
      lease: the `tfps.checkpoints.lease.Lease` of the ``model_dir``, or None.
      clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(self, observers: Observers, lease=None, *,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self._observers, self._lease, self._clock = observers, lease, clock
        self._start = self._start_step = None
        self._writes = None  # (step, clock) while the epoch's writers run
        self.after_writes = _AfterWrites(self)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._start_step = self._clock(), self._step()

    def on_epoch_end(self, epoch, logs=None):
        if self._lease is not None:
            self._lease.check()  # LeaseLost: another job took model_dir over; no write
        step, now = self._step(), self._clock()
        loss = float((logs or {}).get("loss", math.nan))
        values = {}
        if self._start is not None and now > self._start:
            values["steps/sec"] = (step - self._start_step) / (now - self._start)
        values["loss"] = loss
        values["lr"] = learning_rate(self.model.optimizer)
        for observer in self._observers.observers:
            observer.closure_done(step, step - (self._start_step or 0), loss)
            observer.recorded(step, values)
        self._writes = (step, self._clock())

    def writes_done(self) -> None:
        """The epoch's writers are done (`after_writes` calls it): tells the observers how
        long they took."""
        if self._writes is None:
            return
        step, start = self._writes
        self._writes = None
        for observer in self._observers.observers:
            observer.saved(step, self._clock() - start)


class _AfterWrites(tf_keras.callbacks.Callback):
    """Right after the epoch's writers: tells the observers how long they took."""

    def __init__(self, owner: FitHealth):
        super().__init__()
        self._owner = owner

    def on_epoch_end(self, epoch, logs=None):
        self._owner.writes_done()
