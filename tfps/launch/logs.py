"""The launcher's output: its own ``tfps-launch: ...`` lines, and every task's output prefixed.

* launcher lines go to stderr and, time-stamped, to ``LOG_DIR/launcher.log``;
* each task's stdout and stderr (merged, in order) go to the launcher's stdout, every line
  prefixed with the task (``[worker:1] ...``), and unprefixed to ``LOG_DIR/worker-1.log``. A
  restarted task appends to the same file after a ``=== restart N ===`` line.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import IO

__all__ = ["Output", "default_log_dir", "log_file_name"]

# INFO lines TF 2.21 prints in every process before absl's C++ logging is initialized, so
# TF_CPP_MIN_LOG_LEVEL=2 does not hide them. Unless --verbose, they are kept out of the
# terminal (log files keep everything).
_NOISE = re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called"
                    rb"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine")


def default_log_dir() -> str:
    """``tfps_logs/<date>-<time>-<pid>`` under the working directory: one folder per run."""
    return os.path.join("tfps_logs", time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}")


def log_file_name(label: str) -> str:
    """``worker:1`` -> ``worker-1.log``; ``chief`` -> ``chief.log``."""
    return label.replace(":", "-") + ".log"


class Output:
    """Serializes all lines written by the launcher and its pump threads."""

    def __init__(self, log_dir: str, out: IO[str] | None = None, err: IO[str] | None = None,
                 verbose: bool = False):
        self.log_dir = log_dir
        self._verbose = verbose
        os.makedirs(log_dir, exist_ok=True)
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._lock = threading.Lock()
        self._launcher_log = open(os.path.join(log_dir, "launcher.log"), "a", encoding="utf-8")
        self._pumps: list[threading.Thread] = []

    def event(self, message: str) -> None:
        """One launcher line (several for a multi-line message), on stderr and launcher.log."""
        lines = message.splitlines() or [""]
        if not lines[0].startswith("tfps-launch:"):
            lines[0] = f"tfps-launch: {lines[0]}"
        text = "\n".join(lines)
        stamp = time.strftime("%H:%M:%S ")
        with self._lock:
            _safe_write(self._err, text + "\n")
            _safe_write(self._launcher_log, "".join(stamp + l + "\n" for l in text.splitlines()))

    def open_task_log(self, label: str, header: str | None = None) -> IO[bytes]:
        f = open(os.path.join(self.log_dir, log_file_name(label)), "ab")
        if header:
            f.write(f"=== {header} ===\n".encode())
            f.flush()
        return f

    def pump(self, stream: IO[bytes], label: str, log: IO[bytes]) -> None:
        """Copies `stream` (a task's merged output) line by line until EOF, in a thread."""
        thread = threading.Thread(target=self._pump, args=(stream, f"[{label}] ", log),
                                  name=f"tfps-pump-{label}", daemon=True)
        thread.start()
        self._pumps.append(thread)

    def _pump(self, stream: IO[bytes], prefix: str, log: IO[bytes]) -> None:
        try:
            for line in iter(stream.readline, b""):
                if not line.endswith(b"\n"):
                    line += b"\n"
                try:
                    log.write(line)
                    log.flush()
                except (OSError, ValueError):
                    pass
                if not self._verbose and _NOISE.search(line):
                    continue
                with self._lock:
                    _safe_write(self._out, prefix + line.decode("utf-8", "replace"))
        finally:
            stream.close()
            log.close()

    def drain(self, timeout: float = 5.0) -> None:
        """Waits for the pumps to copy what is left (their tasks are already dead)."""
        deadline = time.monotonic() + timeout
        for thread in self._pumps:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with self._lock:
            self._launcher_log.close()


def _safe_write(stream: IO[str], text: str) -> None:
    # A closed or broken stdout (`tfps-launch ... | head`) must not stop the launcher.
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass
