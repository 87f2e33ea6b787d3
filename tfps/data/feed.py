"""What every training input gives the Trainer's closures. Pure: no TensorFlow.

The chief asks its input for a `Feed` per closure (`ClosureInput.feed`): the arguments the
closure function is scheduled with, and how many steps of batches they hold. On the worker, the
traced closure turns those arguments into ``batch_at(i)`` (`ClosureInput.batches`). When the
closure's result arrives on the chief, the input hears it (`ClosureInput.finished`): an input
that hands out record ranges keeps its ledger there. TF's coordinator runs a closure at least
once and re-runs it with the same arguments after a worker failure, so an input whose arguments
name the records (not a position in a shared iterator) reads the same records again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["ClosureInput", "Feed", "after_restore", "before_save", "checkpoint_objects",
           "explain", "steps_per_epoch"]


@dataclasses.dataclass(frozen=True)
class Feed:
    """One closure's input.

    Attributes:
      args: the arguments of the closure function that carry the input (a per-worker iterator,
        or tensors naming records); a tuple.
      steps: the batches they hold: the closure trains this many steps (at most what was
        asked; fewer at the end of an epoch).
      token: what `ClosureInput.finished` gets back (a unit of records, or None).
    """

    args: tuple
    steps: int
    token: Any = None


class ClosureInput(Protocol):
    """The input of a Trainer's closures (see the module docstring)."""

    @property
    def element_spec(self) -> Any:
        """The `tf.TypeSpec` nest of one batch (to trace the model before any closure)."""

    def start(self, coordinator, strategy, steps_per_closure: int) -> None:
        """On the chief, once the steps per closure are known (and again if they change):
        create what the closures read from (per-worker iterators, ...)."""

    def feed(self, num_steps: int) -> Feed:
        """On the chief: the input of the next closure, of at most `num_steps` steps."""

    def batches(self, args: tuple, num_steps, replay: bool = False) -> Callable:
        """Inside the traced closure, on the worker: ``batch_at(i)`` for ``0 <= i <
        num_steps`` from a `Feed`'s `args`. With `replay`, ``batch_at(i)`` may be called more
        than once for one `i` and must give the same batch (local steps read each batch
        twice)."""

    def finished(self, feed: Feed) -> None:
        """On the chief: the closure that got `feed` finished (its result arrived)."""


# ---------------------------------------------------------------------------- optional parts
# An input may also have (`tfps.data.files.FileInput` has all of them):
#   steps_per_epoch: int            -- steps of one epoch of its data
#   checkpoint_object               -- a trackable the Trainer's checkpoint keeps as ``data``
#   before_save() -> None           -- writes its state into that object (nothing in flight)
#   after_restore(step) -> None     -- continues from the state a checkpoint of `step` held
#   explain(error) -> Exception | None  -- the bad input behind a failed closure, named
# The functions below are how the Trainer asks for them (absent: nothing to do).

def steps_per_epoch(data) -> int | None:
    """Steps of one epoch of `data`, if it knows (None for an endless ``dataset_fn``)."""
    return getattr(data, "steps_per_epoch", None)


def checkpoint_objects(data) -> dict:
    """``{"data": trackable}`` for a checkpoint, or ``{}``."""
    obj = getattr(data, "checkpoint_object", None)
    return {} if obj is None else {"data": obj}


def before_save(data) -> None:
    getattr(data, "before_save", lambda: None)()


def after_restore(data, step: int) -> None:
    getattr(data, "after_restore", lambda step: None)(step)


def explain(data, error: Exception) -> Exception | None:
    """The error that names the bad input behind `error` (a closure's failure), or None."""
    return getattr(data, "explain", lambda e: None)(error)
