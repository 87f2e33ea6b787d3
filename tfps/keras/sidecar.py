"""The side-car evaluator task (``tfps-launch --evaluator``), on tf_keras's `SidecarEvaluator`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import tf_keras

from tfps import _env, validate
from tfps.checkpoints.layout import checkpoint_dir
from tfps.cluster import task_from_env, tf_config_task
from tfps.keras.callbacks import _is_scalar

__all__ = ["is_evaluator", "run_sidecar_evaluator"]


def is_evaluator(environ=None) -> bool:
    """True in the side-car evaluator task (TF_CONFIG or Slurm say ``evaluator``)."""
    environ = os.environ if environ is None else environ
    if not environ.get("TF_CONFIG") and "SLURM_PROCID" not in environ:
        return False
    if environ.get("TF_CONFIG"):
        # The task type is all that is needed: an evaluator's TF_CONFIG may list only the
        # evaluator (some setups keep it out of the coordinator's cluster, tensorflow#46169).
        return tf_config_task(environ["TF_CONFIG"]).type == "evaluator"
    return task_from_env(environ).type == "evaluator"


# ------------------------------------------------------------------------------ evaluator
class _EvaluationLogger(tf_keras.callbacks.Callback):
    def __init__(self, print_fn):
        super().__init__()
        self.print_fn = print_fn
        self.results: list[dict[str, float]] = []

    def on_test_end(self, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items() if _is_scalar(v)}
        optimizer = getattr(self.model, "optimizer", None)
        step = int(optimizer.iterations.numpy()) if optimizer is not None else -1
        self.results.append(values)
        self.print_fn(" | ".join([f"evaluator | step: {step}",
                                  *(f"{k}: {v:.4g}" for k, v in values.items())]))


def run_sidecar_evaluator(model_fn: Callable[[], Any], data_fn: Callable[[], Any],
                          model_dir: str, *, steps: int | None = None,
                          max_evaluations: int | None = None,
                          print_fn: Callable[[str], Any] | None = None) -> dict[str, float]:
    """Runs the side-car evaluator: evaluates each new checkpoint of ``model_dir``.

    What the evaluator task's script calls (``tfps-launch --evaluator`` runs the chief's
    script there too; branch on `is_evaluator`). It runs no TF server and uses no strategy:
    it loads the ``ckpt-<epoch>`` weights that `fit` saves under ``model_dir/checkpoints``
    into ``model_fn()`` and evaluates ``data_fn()`` with tf_keras's `SidecarEvaluator`,
    printing one line per evaluation (``evaluator | step: 300 | accuracy: 0.91``).

    Args:
      model_fn: builds and compiles (with metrics, and the training optimizer) the model.
      data_fn: returns the evaluation data (a finite `tf.data.Dataset`).
      model_dir: the chief's `model_dir`.
      steps: batches per evaluation; None for the whole dataset.
      max_evaluations: stop after the checkpoint ``ckpt-<max_evaluations>`` (pass `epochs`);
        None waits for new checkpoints until the process is stopped.
      print_fn: where lines go (default: stdout, flushed).

    Returns:
      The metrics of the last evaluation.
    """
    _env.require_tf_keras()
    if max_evaluations is not None:
        validate.integer("max_evaluations", max_evaluations, low=1)
    printer = _EvaluationLogger(print_fn or (lambda line: print(line, flush=True)))
    model = model_fn()
    tf_keras.utils.SidecarEvaluator(
        model=model, data=data_fn(), checkpoint_dir=checkpoint_dir(model_dir),
        steps=steps, max_evaluations=max_evaluations, callbacks=[printer]).start()
    return printer.results[-1] if printer.results else {}
