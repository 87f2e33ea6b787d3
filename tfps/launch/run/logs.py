"""The launcher's output: its own ``tfps-launch: ...`` lines, and every task's output prefixed.

* launcher lines go to stderr and, time-stamped, to ``LOG_DIR/launcher.log``;
* each task's stdout and stderr (merged, in order) go to the launcher's stdout, every line
  prefixed with the task (``[worker:1] ...``), and unprefixed to ``LOG_DIR/worker-1.log``. A
  restarted task appends to the same file after a ``=== restart N ===`` line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import selectors
import sys
import time
from collections.abc import Iterable
from typing import IO

__all__ = ["Output", "check_log_dir", "default_log_dir", "gpu_absent", "is_noise",
           "log_file_name"]

# TF's C++ log lines in glog form: severity, month and day, time, thread, file:line, ``]``:
# ``I0000 00:00:1765011234.123456   12345 port.cc:153] oneDNN custom operations are on ...``.
# TF prints them through absl before absl's logging is initialized (month-day ``0000``), so
# TF_CPP_MIN_LOG_LEVEL=2 does not hide them, and which ones appear depends on the CPU (oneDNN,
# CPU features, CUDA probes): the class is filtered, not a list of texts.
_GLOG = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\s:\]]+:\d+\] ")
# absl's banner before the first of those lines.
_BANNER = re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called")
# The CUDA probe of every TF process (`E0000 ... cuda_platform.cc:52] failed call to cuInit:
# ... UNKNOWN ERROR (303)`): noise where no NVIDIA device exists (`gpu_absent`); on a GPU
# machine a failed cuInit is news, so it is shown.
_CUINIT = re.compile(rb"\] failed call to cuInit: ")
# Device nodes the NVIDIA driver creates (also inside containers that are given a GPU).
_NVIDIA_DEVICES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia")


def gpu_absent() -> bool:
    """True when this machine has no NVIDIA device for TensorFlow to find."""
    return not any(os.path.exists(p) for p in _NVIDIA_DEVICES)


def is_noise(line: bytes, no_gpu: bool, starting: bool = True) -> bool:
    """True for a TF C++ log line that the terminal does not show (unless --verbose).

    INFO and WARNING lines in glog form never (TF_CPP_MIN_LOG_LEVEL=2 meant to hide them);
    ERROR lines while the task is `starting` (before its first line of its own), but a failed
    cuInit on a machine with a GPU; FATAL lines always show.

    >>> is_noise(b"I0000 00:00:1765011234.123456   12345 port.cc:153] oneDNN ...", True)
    True
    >>> is_noise(b"train | step: 100", True)
    False
    """
    if _BANNER.match(line):
        return True
    found = _GLOG.match(line)
    if found is None:
        return False
    severity = found.group(1)
    if severity in (b"I", b"W"):
        return True
    if severity == b"E" and _CUINIT.search(line):
        return no_gpu
    return severity == b"E" and starting


# Bytes read from a task's pipe at a time.
_CHUNK = 1 << 16


def default_log_dir() -> str:
    """``tfps_logs/<date>-<time>-<pid>`` under the working directory: one folder per run."""
    return os.path.join("tfps_logs", time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}")


def log_file_name(label: str) -> str:
    """``worker:1`` -> ``worker-1.log``; ``chief`` -> ``chief.log``."""
    return label.replace(":", "-") + ".log"


def check_log_dir(log_dir: str, labels: Iterable[str]) -> None:
    """Raises OSError (naming the path) unless every log file of the run can be written.

    Called before anything is created or started: a ``chief.log`` that is a directory would
    otherwise fail the chief's start after ps and workers were already running.
    """
    def fail(cls, code, path):
        raise cls(code, os.strerror(code), path)

    if os.path.lexists(log_dir) and not os.path.isdir(log_dir):
        fail(NotADirectoryError, errno.ENOTDIR, log_dir)
    existing = os.path.abspath(log_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        fail(NotADirectoryError, errno.ENOTDIR, existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(PermissionError, errno.EACCES, existing)
    for name in ("launcher.log", *(log_file_name(label) for label in labels)):
        path = os.path.join(log_dir, name)
        if os.path.isdir(path):
            fail(IsADirectoryError, errno.EISDIR, path)
        if os.path.lexists(path) and not os.access(path, os.W_OK):
            fail(PermissionError, errno.EACCES, path)


class Output:
    """All lines of the launcher and its tasks, from one thread.

    Task output is read with a selector in the supervisor's own loop (`poll`), not by threads:
    the launcher's tasks may live in a PID namespace of their own, and a process whose
    children go to another PID namespace cannot start threads (clone(CLONE_THREAD) fails
    with EINVAL once ``unshare(CLONE_NEWPID)`` has run).
    """

    def __init__(self, log_dir: str, out: IO[str] | None = None, err: IO[str] | None = None,
                 verbose: bool = False):
        self.log_dir = log_dir
        self._verbose = verbose
        self._no_gpu = gpu_absent()
        os.makedirs(log_dir, exist_ok=True)
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._launcher_log = open(os.path.join(log_dir, "launcher.log"), "a", encoding="utf-8")
        self._selector = selectors.DefaultSelector()

    def event(self, message: str) -> None:
        """One launcher line (several for a multi-line message), on stderr and launcher.log."""
        lines = message.splitlines() or [""]
        if not lines[0].startswith("tfps-launch:"):
            lines[0] = f"tfps-launch: {lines[0]}"
        text = "\n".join(lines)
        stamp = time.strftime("%H:%M:%S ")
        _safe_write(self._err, text + "\n")
        self._to_launcher_log("".join(stamp + line + "\n" for line in text.splitlines()))

    def log_only(self, message: str) -> None:
        """A launcher line for launcher.log only (not the terminal)."""
        self._to_launcher_log(f"{time.strftime('%H:%M:%S ')}tfps-launch: {message}\n")

    def _to_launcher_log(self, text: str) -> None:
        if self._launcher_log.closed:
            return
        try:
            self._launcher_log.write(text)
            self._launcher_log.flush()
        except OSError as e:
            self._log_failed(self._launcher_log, e, "the launcher's lines")

    def _log_failed(self, log, error: OSError, whose: str) -> None:
        """One line for a log file the storage refuses; it is not written again (the
        terminal still gets everything): a full disk must not end the job."""
        with contextlib.suppress(OSError, ValueError):
            log.close()
        reason = error.strerror or str(error)
        _safe_write(self._err, f"tfps-launch: log write {log.name} failed: {reason}; {whose} "
                               f"still reach the terminal, not that file\n")

    def open_task_log(self, label: str, header: str | None = None) -> IO[bytes]:
        f = open(os.path.join(self.log_dir, log_file_name(label)), "ab")
        if header:
            f.write(f"=== {header} ===\n".encode())
            f.flush()
        return f

    def pump(self, stream: IO[bytes], label: str, log: IO[bytes]) -> None:
        """Copies `stream` (a task's merged output) line by line until EOF, from `poll`."""
        os.set_blocking(stream.fileno(), False)
        self._selector.register(stream, selectors.EVENT_READ,
                                _Stream(stream, f"[{label}] ".encode(), log))

    def poll(self, timeout: float) -> None:
        """Copies whatever task output arrives within `timeout` seconds (sleeps otherwise)."""
        if not self._selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self._selector.select(timeout):
            self._read(key.data)

    def wait(self, seconds: float) -> None:
        """Copies task output for `seconds` (a `poll` that does not return early)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.poll(left)

    def _read(self, s: _Stream) -> None:
        try:
            chunk = os.read(s.stream.fileno(), _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            *lines, s.partial = (s.partial + chunk).split(b"\n")
            for line in lines:
                self._line(s, line + b"\n")
            return
        if s.partial:  # EOF: the last line had no newline
            self._line(s, s.partial + b"\n")
        self._selector.unregister(s.stream)
        s.stream.close()
        s.log.close()

    def _line(self, s: _Stream, line: bytes) -> None:
        if not s.log.closed:
            try:
                s.log.write(line)
                s.log.flush()
            except OSError as e:
                self._log_failed(s.log, e, f"{s.prefix.decode().strip('[] ')}'s output lines")
            except ValueError:
                pass
        if not self._verbose and is_noise(line, self._no_gpu, s.starting):
            return
        if s.starting and line.strip():
            s.starting = False
        _safe_write(self._out, (s.prefix + line).decode("utf-8", "replace"))

    def drain(self, timeout: float = 5.0) -> None:
        """Copies what is left of every task's output (their tasks are already dead)."""
        deadline = time.monotonic() + timeout
        while self._selector.get_map() and time.monotonic() < deadline:
            self.poll(min(0.1, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self._launcher_log.close()


class _Stream:
    """A task's output pipe, the prefix of its lines, its log file, and a partial line."""

    def __init__(self, stream: IO[bytes], prefix: bytes, log: IO[bytes]):
        self.stream, self.prefix, self.log = stream, prefix, log
        self.partial = b""
        self.starting = True  # until the task's first line of its own (not TF's C++ logs)


def _safe_write(stream: IO[str], text: str) -> None:
    # A closed or broken stdout (`tfps-launch ... | head`) must not stop the launcher.
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass
