"""What every emitted job shares: `JobSpec`, the base of each engine's typed spec. Pure.

An engine is one module of `tfps.emit` with one frozen dataclass deriving from `JobSpec`: its
fields are the engine's settings (with their defaults), its ``__post_init__`` validates them
once, after `JobSpec`'s own checks, and its `render` returns the text the engine reads. The
same module declares the engine's command-line flags (`tfps.emit.cli`).

>>> spec = JobSpec(script="/app/train_mnist.py", num_ps=1, num_workers=3)
>>> spec.name, spec.counts
('tfps-train-mnist', {'chief': 1, 'ps': 1, 'worker': 3, 'evaluator': 0})
>>> JobSpec(script="t.py", num_ps=0)
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `num_ps` must be an integer in [1, 100000]. Received: num_ps=0
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import ClassVar

from tfps import exit_codes, validate
from tfps.cluster import DEFAULT_NUM_PS, DEFAULT_NUM_WORKERS
from tfps.emit import resources
from tfps.errors import ConfigError

__all__ = ["RETRYABLE_EXIT_CODES", "JobSpec", "default_name"]

# The exit codes after which an engine starts a task again (`tfps.exit_codes`: 130, 137, 138
# and 143, as Kubeflow reads them); every other non-zero code is permanent, and ends the job.
RETRYABLE_EXIT_CODES = tuple(code for code in range(1, 256) if exit_codes.is_retryable(code))

# The most restart events the launcher of a task may be given (tfps-launch's own bound on
# --max-restarts).
_MAX_RESTARTS = 10_000
# Job names from script names: short enough for any engine's derived names (a TFJob's
# Services are <name>-<type>-<index>, at most 63 characters).
_MAX_DEFAULT_NAME = 40


def default_name(script: str) -> str:
    """A job name from the script's file name: ``train_mnist.py`` -> ``tfps-train-mnist``.

    A DNS-1035 label (lower-case letters, digits and '-'), which every engine accepts.
    """
    stem = os.path.splitext(os.path.basename(script or ""))[0].lower()
    stem = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")
    return ("tfps-" + stem)[:_MAX_DEFAULT_NAME].rstrip("-") if stem else "tfps-job"


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A parameter-server job for an external engine: the script every task runs, the task
    counts, and what each task's launcher is told.

    Every task of the job runs ``tfps-launch --from-env SCRIPT ARGS``: the launcher reads the
    task from what the engine sets (``TF_CONFIG``, Slurm's variables) and runs the task
    server (ps, worker) or the script (chief, evaluator). Engines derive from this class
    (`tfps.emit.tfjob.TFJobSpec`, `tfps.emit.slurm.SlurmSpec`); ``render`` is theirs.

    Attributes:
      script: path of the training script where the tasks run (in the image, on the nodes).
      script_args: its arguments, as strings.
      num_ps: parameter-server tasks (>= 1).
      num_workers: worker tasks (>= 1).
      evaluator: add one side-car evaluator task (it runs the script).
      gpus_per_worker: GPUs per worker task (0: none; chief, ps and evaluator get none).
      name: the job's name; None: from the script's name (`default_name`).
      model_bytes: bytes of all variables and optimizer slots, to size memory; None when
        unknown.
      max_restarts: the launcher's ``--max-restarts`` in every task; None: its default.
      data_workers: data workers of TF's tf.data service beside the job, with a dispatcher
        (`tfps.emit.data_service`; 0: none), for `tfps.data`'s service mode.

    Raises:
      ConfigError: naming the field and the value received.
    """

    # The engine's name on the command line (``--emit tfjob``); set by each engine.
    engine: ClassVar[str] = ""
    # Where the tasks find the script, for the error message ("in the image").
    script_location: ClassVar[str] = ""

    script: str
    script_args: tuple[str, ...] = ()
    num_ps: int = DEFAULT_NUM_PS
    num_workers: int = DEFAULT_NUM_WORKERS
    evaluator: bool = False
    gpus_per_worker: int = 0
    name: str | None = None
    model_bytes: int | None = None
    max_restarts: int | None = None
    data_workers: int = 0

    def __post_init__(self):
        validate.count("num_ps", self.num_ps, 1)
        validate.count("num_workers", self.num_workers, 1)
        validate.count("gpus_per_worker", self.gpus_per_worker, 0)
        validate.count("data_workers", self.data_workers, 0)
        validate.boolean("evaluator", self.evaluator)
        validate.integer("model_bytes", self.model_bytes, low=1, allow_none=True)
        validate.integer("max_restarts", self.max_restarts, low=0, high=_MAX_RESTARTS,
                         allow_none=True)
        if not isinstance(self.script, str) or not self.script:
            raise ConfigError(f"Argument `script` must be the path of the training script"
                              f"{self.script_location}. Received: script={self.script!r}")
        if isinstance(self.script_args, (str, bytes)) or not isinstance(
                self.script_args, (list, tuple)):
            raise validate.fail("script_args", self.script_args, "a list of strings")
        object.__setattr__(self, "script_args", tuple(map(str, self.script_args)))
        if self.name is None:
            object.__setattr__(self, "name", default_name(self.script))

    @property
    def counts(self) -> dict[str, int]:
        """Tasks per role, chief first: ``{"chief": 1, "ps": ..., "worker": ..., ...}``."""
        return {"chief": 1, "ps": self.num_ps, "worker": self.num_workers,
                "evaluator": int(self.evaluator)}

    @property
    def num_tasks(self) -> int:
        """Tasks of the training cluster: chief, ps and workers (the evaluator is beside it)."""
        return 1 + self.num_ps + self.num_workers

    def launcher_args(self) -> tuple[str, ...]:
        """The flags of every task's ``tfps-launch --from-env`` before the script."""
        return ("--max-restarts", str(self.max_restarts)) if self.max_restarts is not None \
            else ()

    def default_resources(self) -> dict[str, resources.Resources]:
        """What each role asks for, sized from the job's shape and model (`resources`)."""
        return resources.defaults(num_ps=self.num_ps, num_workers=self.num_workers,
                                  model_bytes=self.model_bytes)

    def render(self) -> str:
        """The text the engine reads (a manifest, a batch script)."""
        raise NotImplementedError(f"{type(self).__name__} is not an engine's spec")
