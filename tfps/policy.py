"""Sizing rules, in one place: steps per closure, shard size, evaluation shards. Pure Python.

The Trainer, `tfps.keras` and ``tfps-launch --doctor`` all size the same things; each number
lives here once, with its reason.

* **Steps per closure** (`packing`): every `ClusterCoordinator.schedule` costs a coordinator
  -> worker round trip. The Trainer times closures of 1 and 8 steps at start and packs the
  smallest count that keeps that cost under `PACKING_OVERHEAD` of a closure, with closures
  no longer than about `MAX_CLOSURE_SECONDS` (a dead worker loses at most one closure).
* **Keras fit** (`steps_per_execution`): callbacks run between closures and an epoch is never
  split mid-closure, so it aims at `CLOSURES_PER_WORKER` closures per worker and epoch, at
  most `MAX_STEPS_PER_EXECUTION` steps each.
* **Shard size** (`DEFAULT_MIN_SHARD_BYTES`): the smallest shard `tfps.make_strategy`'s
  partitioner cuts a variable into, and what ``--doctor`` weighs a ps count against.
* **Exactly-once evaluation** (`eval_shards`): `EVAL_SHARDS_PER_WORKER` shards per worker (as
  tf_keras's ``pss_evaluation_shards="auto"``), never more than the data has batches.
* **Thread spinning** (`thread_spinning`): TF's thread pools spin before they sleep, which
  lowers latency on idle cores and burns the cores other tasks need where several TF
  processes share a host; tfps turns spinning off unless every task has `SPIN_CORES_PER_TASK`
  cores of its own. ``tfps-launch`` tells each task how many it runs on the host
  (`TASKS_ON_HOST_ENV`).

>>> packing(per_step_s=0.001, overhead_s=0.004)
80
>>> steps_per_execution(200, workers=2), steps_per_execution(7, workers=4)
(25, 1)
>>> eval_shards(workers=2), eval_shards(workers=2, num_batches=4)
(10, 4)
"""

from __future__ import annotations

import math

from tfps import validate

__all__ = ["CALIBRATION_ROUNDS", "CALIBRATION_STEPS", "DEFAULT_MIN_SHARD_BYTES",
           "EVAL_SHARDS_PER_WORKER",
           "MAX_STEPS_PER_CLOSURE", "calibration_fits", "eval_shards", "packing",
           "steps_per_execution"]

# Packing goal: scheduling overhead at most this fraction of a closure's time...
PACKING_OVERHEAD = 0.05
# ...but closures no longer than this (a dead worker loses at most one closure of work).
MAX_CLOSURE_SECONDS = 1.0
MAX_STEPS_PER_CLOSURE = 1000
# The automatic measurement times closures of these two sizes, this many rounds each.
CALIBRATION_STEPS = (1, 8)
CALIBRATION_ROUNDS = 3
# Keras fit under PSS: closures per worker per epoch, and the most steps per closure (more only
# delays callbacks; the measurement behind 100: docs/performance.md, "Sizing rules and what
# they rest on").
CLOSURES_PER_WORKER = 4
MAX_STEPS_PER_EXECUTION = 100
# Below this size a shard costs more in per-RPC overhead than it saves in ps bandwidth.
DEFAULT_MIN_SHARD_BYTES = 256 << 10
# Exactly-once evaluation: tf_keras's own "auto" (training.py, _infer_exact_eval_shards).
EVAL_SHARDS_PER_WORKER = 5
# Spin only with this many cores per TF process on the host: each has an inter-op and an
# intra-op pool as wide as the host, and spinning threads take cores from the other tasks
# (measured: docs/performance.md, "Sizing rules and what they rest on").
SPIN_CORES_PER_TASK = 2
# The environment variable tfps-launch sets in every task: TF processes it runs on this host.
TASKS_ON_HOST_ENV = "TFPS_TASKS_ON_HOST"


def packing(per_step_s: float, overhead_s: float) -> int:
    """Steps per closure for a step of `per_step_s` and a scheduling cost of `overhead_s`:
    the smallest count with overhead <= 5 % of the closure, capped near one second."""
    per_step_s = max(per_step_s, 1e-6)
    wanted = math.ceil(max(overhead_s, 0.0) / (PACKING_OVERHEAD * per_step_s))
    return max(1, min(wanted, int(MAX_CLOSURE_SECONDS / per_step_s), MAX_STEPS_PER_CLOSURE))


def packing_from_timings(t_small: float, t_large: float) -> int:
    """`packing` from the best wall times of closures of 1 and 8 steps."""
    small, large = CALIBRATION_STEPS
    per_step = max((t_large - t_small) / (large - small), 1e-6)
    return packing(per_step, t_small - small * per_step)


def calibration_fits(budget_steps: int, workers: int) -> bool:
    """Whether a run of `budget_steps` is long enough to measure packing at all."""
    return budget_steps >= 10 * workers


def steps_per_execution(steps_per_epoch: int, workers: int, *,
                        max_steps: int = MAX_STEPS_PER_EXECUTION) -> int:
    """A ``compile(steps_per_execution=...)`` that divides `steps_per_epoch` into equal
    closures, about `CLOSURES_PER_WORKER` per worker, at most `max_steps` each."""
    validate.integer("steps_per_epoch", steps_per_epoch, low=1)
    validate.integer("workers", workers, low=1)
    validate.integer("max_steps", max_steps, low=1)
    bound = max(1, min(max_steps, steps_per_epoch // (CLOSURES_PER_WORKER * workers)))
    return max(d for d in range(1, bound + 1) if steps_per_epoch % d == 0)


def thread_spinning(tasks_on_host: int, cores: int) -> bool:
    """Whether TF's thread pools should spin: only with `SPIN_CORES_PER_TASK` cores per task.

    >>> thread_spinning(5, 2), thread_spinning(1, 16)
    (False, True)
    """
    return cores >= SPIN_CORES_PER_TASK * max(1, tasks_on_host)


def ps_intra_op_threads(spinning: bool) -> int:
    """Intra-op threads of a ps task: 1 where its host is shared (no spinning), else TF's
    default (0). A ps runs small kernels (one step's rows); on a shared host, splitting one
    across threads costs more hand-offs than it saves (docs/performance.md)."""
    return 0 if spinning else 1


def tasks_on_host(environ) -> int:
    """TF processes on this host as the launcher said (`TASKS_ON_HOST_ENV`; 1 when unset)."""
    try:
        return max(1, int(environ.get(TASKS_ON_HOST_ENV, "1")))
    except ValueError:
        return 1


def eval_shards(workers: int, num_batches: int | None = None) -> int:
    """Shards for exactly-once evaluation: 5 per worker, at most `num_batches`.

    TF's auto-sharding fails ("Could not apply FILE based sharding") when a dataset has fewer
    batches than shards, so a known size caps the count.
    """
    shards = EVAL_SHARDS_PER_WORKER * validate.integer("workers", workers, low=1)
    if num_batches is not None:
        shards = min(shards, validate.integer("num_batches", num_batches, low=1))
    return shards
