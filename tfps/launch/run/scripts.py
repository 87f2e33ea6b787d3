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
import warnings

from tfps._cli import UsageError, quote

__all__ = ["check_runnable"]

# Bytes read to find the #! line (Linux reads at most 256).
_HEAD = 256
# A .py larger than this is not compiled ahead (compiling costs ~1 s per 10 MB); Python
# itself still reports its syntax errors when the chief starts.
_MAX_COMPILE_BYTES = 8 << 20


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
        _check_python(script, shown)
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


def _check_python(script: str, shown: str) -> None:
    """A ``.py`` must compile under the launcher's Python (the one that will run it): a
    syntax error, binary garbage or NUL bytes would otherwise surface only after ps and
    workers started."""
    try:
        with open(script, "rb") as f:
            source = f.read(_MAX_COMPILE_BYTES + 1)
    except OSError as e:
        raise UsageError(f"script {shown}: {e.strerror or e}") from None
    if len(source) > _MAX_COMPILE_BYTES:
        return
    try:
        with warnings.catch_warnings():  # SyntaxWarnings are the script's own business
            warnings.simplefilter("ignore")
            compile(source, script, "exec", dont_inherit=True)
    except SyntaxError as e:
        where = f" (line {e.lineno})" if e.lineno else ""
        raise UsageError(f"script {shown}: not valid Python{where}: "
                         f"{quote(str(e.msg or e))}") from None
    except (ValueError, UnicodeDecodeError) as e:  # NUL bytes; an undecodable file
        raise UsageError(f"script {shown}: not valid Python: {quote(str(e))}") from None
    except (MemoryError, RecursionError):  # pathological nesting: Python would fail too
        raise UsageError(f"script {shown}: not valid Python (too deeply nested to compile)"
                         ) from None
