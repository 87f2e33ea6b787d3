"""Storage errors in one line: what failed, why, and what is kept. Pure Python.

A checkpoint, an export or a log write that fails because of the storage (a full disk, no
permission, a read-only filesystem, a quota) is not a bug of the program and not cured by a
restart: the process ends with one line that names the path, the error and what is kept,

    tfps: checkpoint /runs/a/checkpoints/ckpt-215 failed: No space left on device; the last
    good checkpoint is ckpt-200      (one line)

removes what the write left half done, and exits `tfps.exit_codes.FAILED` (1), which
schedulers read as permanent (`StorageFailed`). TF reports such a failure as an `OpError`
whose message carries the C library's text (``...; No space left on device``), often after a
page of gRPC detail from the ps that failed; `storage_error` finds the cause in either form.

>>> import errno
>>> storage_error(OSError(errno.ENOSPC, "No space left on device"))
'No space left on device'
>>> storage_error(ValueError("bad shape")) is None
True
"""

from __future__ import annotations

import errno
import os
import sys

from tfps import exit_codes

__all__ = ["STORAGE_ERRNOS", "StorageFailed", "fail", "storage_error"]

# What the storage, not the program, is to blame for.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class StorageFailed(SystemExit):
    """A write failed on storage: exit `tfps.exit_codes.FAILED` (permanent); its one-line
    `message` has been printed to stderr."""

    def __init__(self, message: str):
        super().__init__(exit_codes.FAILED)
        self.message = message


def storage_error(error: BaseException) -> str | None:
    """The C library's text for the storage failure behind `error` (an `OSError`, or any
    error whose message names one, as TF's do), or None when it is something else."""
    for e in (error, error.__cause__, error.__context__):
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return os.strerror(e.errno)
    text = str(getattr(error, "message", "") or error)
    for code in STORAGE_ERRNOS:
        if os.strerror(code) in text:
            return os.strerror(code)
    return None


def fail(what: str, path: str, reason: str, kept: str) -> StorageFailed:
    """Prints ``tfps: <what> <path> failed: <reason>; <kept>`` to stderr and returns the
    `StorageFailed` to raise."""
    message = f"tfps: {what} {path} failed: {reason}; {kept}"
    print(message, file=sys.stderr, flush=True)
    return StorageFailed(message)
