"""Whether the chief's SCRIPT can run at all, checked before any task starts.

A ``.py`` file runs under the launcher's Python. Anything else is executed directly, so it
must be executable and either a binary or a script whose ``#!`` line names an interpreter
that exists: otherwise ps and workers would start, and the chief's ``exec`` would fail
afterwards (an executable without ``#!`` even reports itself as missing: ENOEXEC/ENOENT).
"""

from __future__ import annotations

import os
import shutil
import stat

from tfps._cli import UsageError, quote

__all__ = ["check_runnable"]

# Bytes read to find the #! line (Linux reads at most 256).
_HEAD = 256


def check_runnable(script: str) -> None:
    """Raises `UsageError` (one line) unless `script` can be run as the chief's program."""
    shown = quote(script)
    try:
        info = os.stat(script)
    except OSError as e:
        raise UsageError(f"script {shown}: {'no such file' if e.errno == 2 else e.strerror}"
                         ) from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"script {shown}: not a regular file")
    if not os.access(script, os.R_OK):
        raise UsageError(f"script {shown}: not readable")
    if script.endswith(".py"):
        return
    if not os.access(script, os.X_OK):
        raise UsageError(f"script {shown}: not executable (only .py files run under Python)")
    with open(script, "rb") as f:
        head = f.read(_HEAD)
    if head.startswith(b"\x7fELF"):
        return
    if not head.startswith(b"#!"):
        raise UsageError(f"script {shown}: no '#!' line, so it cannot be executed (add e.g. "
                         f"'#!/usr/bin/env python3', or name it .py)")
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    words = line.split()
    if not words:
        raise UsageError(f"script {shown}: its '#!' line names no interpreter")
    interpreter = words[0]
    if os.path.basename(interpreter) == "env" and len(words) > 1 and \
            not words[1].startswith("-"):
        found = shutil.which(words[1])
        if found is None:
            raise UsageError(f"script {shown}: its interpreter {quote(words[1])} (#!{line}) "
                             f"is not on PATH")
        return
    if not (os.path.isfile(interpreter) and os.access(interpreter, os.X_OK)):
        raise UsageError(f"script {shown}: its interpreter {quote(interpreter)} (#!{line}) "
                         f"does not exist or is not executable")
