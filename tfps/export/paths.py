"""Where an export goes, and writing it so that a crash never leaves half a SavedModel there.

A SavedModel is written into a temporary directory *beside* its path (same filesystem), every
file and directory is synced, and only then is it renamed into place: whoever looks at the
path (a serving system polling a model directory, a user) sees no SavedModel, the previous
one, or the whole new one, never a part. When the path already holds a SavedModel
(``overwrite=True``) the two directories are exchanged in one step (Linux
``renameat2(RENAME_EXCHANGE)``), so the previous export stays in place until the new one
replaces it. A process killed mid-write leaves only its temporary directory,
``.<name>.tmp.<host>.<pid>.<random>``; the next export to the same path removes it once its
process is gone.

Pure Python: no TensorFlow, so bad paths are refused before TensorFlow is even imported.

>>> import tempfile, os
>>> base = tempfile.mkdtemp()
>>> target = check_target(os.path.join(base, "model", "1"), overwrite=False)
>>> def write(tmp):  # what tf.saved_model.save does, in short
...     open(os.path.join(tmp, "saved_model.pb"), "wb").close()
>>> write_atomically(target, write) == target, is_saved_model(target)
(True, True)
>>> check_target(target, overwrite=False)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `path` must not exist yet (it holds a SavedModel; pass overwrite=True to replace it). Received: path='/tmp/...'
"""  # noqa: E501 - a doctest shows an error line whole

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Callable

from tfps.errors import ConfigError
from tfps.validate import describe

__all__ = ["check_target", "is_saved_model", "remove_stale_temps", "write_atomically"]

# What makes a directory a SavedModel (tensorflow/python/saved_model/loader_impl.py,
# `parse_saved_model`: the binary or the text protocol buffer).
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_TMP = ".tmp."
_OLD = ".old."
# <linux/fs.h>: exchange the two paths atomically (renameat2, Linux 3.15+, glibc 2.28+).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# Where the filesystem cannot say: Linux's NAME_MAX and PATH_MAX (<linux/limits.h>).
_NAME_MAX = 255
_PATH_MAX = 4096
# Digits of the largest pid (Linux's pid_max limit, 4194304) and `tempfile`'s random
# characters: the longest a temporary directory's name gets beyond its prefix.
_PID_DIGITS = 7
_RANDOM = 8


def is_saved_model(path: str) -> bool:
    """True when `path` is a directory holding a SavedModel's protocol buffer."""
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in _SAVED_MODEL_FILES)


def check_target(path, *, overwrite: bool, name: str = "path") -> str:
    """`path` as an absolute path an export may write; raises `ConfigError` otherwise.

    Refused: anything but a non-empty string, a symbolic link, an existing path that is not
    a SavedModel (a file, an empty or other directory: never replaced, whatever
    `overwrite`), an existing SavedModel without `overwrite`, and a path whose nearest
    existing parent is not a writable directory. Nothing is created here. `name` is the
    argument the message names (a command-line flag such as ``--out`` gets the command-line
    style).
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path or "\0" in path:
        raise _refused(name, path, "must be a non-empty path")
    target = os.path.abspath(path)
    if os.path.islink(target):
        raise _refused(name, path, "must not be a symbolic link (the export would replace "
                                   "the link, not what it points to)")
    if os.path.lexists(target):
        if not is_saved_model(target):
            what = "a directory" if os.path.isdir(target) else "a file"
            raise _refused(name, path, f"must be a new path or a SavedModel to replace; it is "
                                       f"{what} that is not a SavedModel")
        if not overwrite:
            flag = "--overwrite" if name.startswith("--") else "overwrite=True"
            raise _refused(name, path, f"must not exist yet (it holds a SavedModel; pass "
                                       f"{flag} to replace it)")
    parent = os.path.dirname(target)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise _refused(name, path, f"must be under a writable directory; {parent} is not one")
    _check_lengths(target, parent, name, path)
    return target


def _check_lengths(target: str, existing: str, name: str, path) -> None:
    """Refuses a path whose names the filesystem cannot hold, counting the temporary
    directory written beside it (`_temp_prefix` plus `tempfile`'s 8 random characters):
    refused now, not after the model was built and traced."""
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = _NAME_MAX, _PATH_MAX
    name_max = name_max if name_max and name_max > 0 else _NAME_MAX
    path_max = path_max if path_max and path_max > 0 else _PATH_MAX
    temp = len(os.path.basename(_temp_prefix(target, _TMP))) - len(
        os.path.basename(target)) + _PID_DIGITS - len(str(os.getpid())) + _RANDOM
    new = os.path.relpath(target, existing).split(os.sep)
    for i, part in enumerate(new):
        room = name_max - (temp if i == len(new) - 1 else 0)
        if len(os.fsencode(part)) > room:
            why = (f"the filesystem holds {name_max}, and the export is first written "
                   f"beside it under a longer name" if room < name_max else
                   "the filesystem's limit")
            raise _refused(name, path, f"must have names of at most {room} bytes ({why}); "
                                       f"{_short(part)} has {len(os.fsencode(part))}")
    if len(os.fsencode(target)) + temp >= path_max:
        raise _refused(name, path, f"must be shorter than {path_max - temp} bytes (the "
                                   f"system's longest path, less the temporary name)")


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _refused(name: str, value, requirement: str) -> ConfigError:
    if name.startswith("--"):  # a command line: ``--out 'x': must ...``
        return ConfigError(f"{name} {describe(value)}: {requirement}")
    return ConfigError(f"Argument `{name}` {requirement}. Received: {name}={describe(value)}")


def write_atomically(target: str, write: Callable[[str], None]) -> str:
    """Runs ``write(tmp)`` into a fresh directory beside `target`, then puts it at `target`.

    Args:
      target: an absolute path checked by `check_target` (an existing SavedModel there is
        replaced).
      write: fills the directory it is given (it exists and is empty).

    Returns:
      `target`. On any exception (or a kill) `target` is left as it was.
    """
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temps(target)
    tmp = tempfile.mkdtemp(prefix=_temp_prefix(target, _TMP), dir=parent)
    try:
        write(tmp)
        _sync_tree(tmp)
        if os.path.lexists(target):
            _replace(tmp, target)
        else:
            os.rename(tmp, target)  # fails (ENOTEMPTY / EEXIST) rather than merge into one
        _sync_directory(parent)
    finally:
        if os.path.lexists(tmp):  # a failed write, or the previous export after a swap
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def remove_stale_temps(target: str) -> list[str]:
    """Removes the temporary directories that exports to `target` left when their process
    died (this host's processes only: another host's cannot be checked); returns them."""
    parent, removed = os.path.dirname(target), []
    prefix = f".{os.path.basename(target)}{_TMP}"
    host = socket.gethostname()
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        owner = name[len(prefix):].rsplit(".", 2)  # host (may hold dots), pid, random
        if len(owner) != 3 or owner[0] != host or not owner[1].isdigit():
            continue
        if _alive(int(owner[1])):
            continue
        path = os.path.join(parent, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _temp_prefix(target: str, kind: str) -> str:
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}{kind}"
                                                 f"{socket.gethostname()}.{os.getpid()}.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def _replace(new: str, target: str) -> None:
    """Puts `new` at `target` (an existing directory); the old one ends up at `new`."""
    if _exchange(new, target):
        return
    # No atomic exchange here (not Linux, an old kernel, a filesystem without it): two
    # renames. A kill between them leaves the previous export beside `target` as
    # `.<name>.old.<host>.<pid>.<random>`, never a partial one at `target`.
    old = tempfile.mkdtemp(prefix=_temp_prefix(target, _OLD), dir=os.path.dirname(target))
    os.rmdir(old)
    os.rename(target, old)
    os.rename(new, target)
    os.rename(old, new)


def _exchange(a: str, b: str) -> bool:
    """Swaps two paths in one step with ``renameat2(RENAME_EXCHANGE)``; False where the
    system cannot (the caller falls back to two renames)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot exchange {a} and {b}: {os.strerror(code)}")


def _sync_tree(root: str) -> None:
    """fsync every file and directory under `root`, so a rename never publishes a directory
    whose contents a power loss could still drop."""
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_directory(directory)


def _sync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
