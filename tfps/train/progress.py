"""Progress on the chief: one-line records, a progress bar, TensorBoard summaries.

Records look like Orbit's::

    train | step: 1200 | steps/sec: 850.3 | examples/sec: 435353.6 | loss: 0.41 | lr: 0.05

They go to stdout (flushed, so `tfps-launch` shows them live) and, with a ``model_dir``, to
TensorBoard under ``model_dir/train`` (and ``model_dir/eval`` for evaluation).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

import numpy as np

__all__ = ["ProgressReporter", "format_record", "summary_writer"]

# One TensorBoard writer per directory in this process: every record, per-shard table scalar
# and evaluation of one run goes to one event file per directory, however often `train` runs.
_WRITERS: dict = {}


def summary_writer(directory: str):
    """The process's one `tf.summary` writer for `directory` (made on first use)."""
    import tensorflow as tf

    key = os.path.abspath(directory)
    if key not in _WRITERS:
        _WRITERS[key] = tf.summary.create_file_writer(key)
    return _WRITERS[key]


def format_record(kind: str, step: int, values: Mapping[str, float]) -> str:
    """``train | step: 10 | loss: 0.5`` (floats with 4 significant digits, rates with 1 dp)."""
    parts = [kind, f"step: {step}"]
    for key, value in values.items():
        if isinstance(value, (int, np.integer)):
            parts.append(f"{key}: {value}")
        elif key.endswith("/sec"):
            parts.append(f"{key}: {value:.1f}")
        else:
            parts.append(f"{key}: {value:.4g}")
    return " | ".join(parts)


class ProgressReporter:
    """Prints records, drives an optional `tf_keras.utils.Progbar`, writes summaries.

    Args:
      total_steps: the step training ends at.
      model_dir: where TensorBoard summaries go (``train/``, ``eval/``); None for none.
      progress_bar: ``"auto"`` (a bar only when stdout is a terminal), ``"on"`` or ``"off"``.
      stream: where records are printed.
    """

    def __init__(self, total_steps: int, model_dir: str | None = None,
                 progress_bar: str = "auto", stream=None):
        self._stream = stream or sys.stdout
        self._model_dir = model_dir
        self._bar = None
        if progress_bar == "on" or (progress_bar == "auto" and self._stream.isatty()):
            from tf_keras.utils import Progbar
            self._bar = Progbar(total_steps, unit_name="step")
        self._last = None  # (step, time) of the previous record

    def _writer(self, kind: str):
        if self._model_dir is None:
            return None
        return summary_writer(os.path.join(self._model_dir, kind))

    def start(self, step: int) -> None:
        self._last = (step, time.perf_counter())
        if self._bar is not None:
            self._bar.update(step)

    def rate(self, step: int) -> float:
        """Steps/sec since the previous call (or `start`); resets the clock."""
        now = time.perf_counter()
        last_step, last_time = self._last or (step, now)
        self._last = (step, now)
        return (step - last_step) / max(now - last_time, 1e-9)

    def record(self, kind: str, step: int, values: Mapping[str, float],
               histograms: Mapping[str, np.ndarray] | None = None) -> str:
        """Prints one record and writes its scalars (and histograms) to TensorBoard."""
        line = format_record(kind, step, values)
        if self._bar is not None and kind == "train":
            self._bar.update(step, values=[(k, v) for k, v in values.items()
                                           if not k.endswith("/sec")])
        else:
            print(line, file=self._stream, flush=True)
        writer = self._writer(kind)
        if writer is not None:
            import tensorflow as tf

            with writer.as_default(step=step):
                for key, value in values.items():
                    tf.summary.scalar(key, float(value))
                for key, value in (histograms or {}).items():
                    if len(value):
                        tf.summary.histogram(key, value)
            writer.flush()
        return line

    def close(self) -> None:
        """Ends the progress bar's line; the writers stay open for the next records (they
        were flushed at every record)."""
        if self._bar is not None:
            self._stream.flush()
