"""Process environment that every tfps process needs, set before TensorFlow is imported.

* ``TF_USE_LEGACY_KERAS=1``: `tf.keras` becomes tf_keras 2.x, the only Keras whose `fit` runs
  under ParameterServerStrategy (Keras 3 has no PSS support: keras-team/keras#18624).
  TensorFlow reads it lazily, on the first attribute access of `tf.keras`
  (`tensorflow/python/util/lazy_loader.py`, `KerasLazyLoader._initialize`), so setting it after
  `import tensorflow` still works as long as nobody has touched `tf.keras` yet.
* ``GRPC_FAIL_FAST=use_caller``: a dead task surfaces as `UnavailableError` the coordinator can
  act on, instead of an RPC that waits forever.
"""

from __future__ import annotations

import os
import signal
import sys

# The tfps commands. None of them uses tf.keras, and the launcher sets TF_USE_LEGACY_KERAS=1
# for every task it starts, so a warning about this process's own binding would be noise (a
# second line before a one-line error).
_MODULES = ("tfps.launch", "tfps.server")
_SCRIPTS = {"tfps-launch": "tfps.launch"}


def tfps_command(argv: list[str] | None = None) -> str | None:
    """``"tfps.launch"`` in ``tfps-launch`` / ``python -m tfps.launch[.x]``, ``"tfps.server"``
    in ``python -m tfps.server``, else None.

    Read from `sys.orig_argv`, which is set before any import (`sys.argv` is still ``-m``
    while the package of a ``-m`` module is imported).
    """
    argv = list(getattr(sys, "orig_argv", ()) if argv is None else argv)
    words = iter(argv[1:])
    for word in words:
        if word in ("-W", "-X"):  # the interpreter options that take a value
            next(words, None)
        elif word.startswith("-m"):
            module = ".".join((word[2:] or next(words, "")).split(".")[:2])
            return module if module in _MODULES else None
        elif word == "-c" or not word.startswith("-"):
            return _SCRIPTS.get(os.path.basename(word))
    return None


# Signals that reached the launcher before `tfps.launch.entry` took them over. Python turns
# a SIGINT into a KeyboardInterrupt traceback wherever it lands, and `import tfps` (which runs
# before the entry point: it is the entry point's package) takes 50-200 ms, most of it in
# importlib.metadata below. So the launcher records SIGINT, SIGTERM and SIGHUP from here on;
# `tfps.launch.cli.main` adds what was recorded to the entry point's own record. (A signal
# in the first ~20 ms, while the interpreter itself starts, still gets Python's default.)
EARLY_SIGNALS: list[int] = []
if tfps_command() == "tfps.launch":
    for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, lambda signum, frame: EARLY_SIGNALS.append(signum))

import importlib.metadata  # noqa: E402  (after the signal handlers: see above)
import warnings  # noqa: E402

from tfps import _tf  # noqa: E402
from tfps.errors import KerasBindingError, KerasBindingWarning  # noqa: E402

# Variables tfps sets for every task it launches; the launcher's --dry-run shows them.
TASK_ENV = {"GRPC_FAIL_FAST": "use_caller", "TF_USE_LEGACY_KERAS": "1"}
# TF C++ logs: 2 hides INFO and WARNING (gRPC chatter); the launcher's --verbose lifts it.
QUIET_TF_LOGS = {"TF_CPP_MIN_LOG_LEVEL": "2"}

_KERAS3_MESSAGE = (
    "tf.keras in this process is Keras 3, which cannot train under ParameterServerStrategy. "
    "Set TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported (or import tfps first; "
    "tfps-launch sets it for every task).")

_IMPORT_ORDER_MESSAGE = (
    "TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set: `tf.keras.<name>` will be "
    "tf_keras, but `from tensorflow.keras import ...` statements will get Keras 3, which cannot "
    "train under ParameterServerStrategy. Import tfps before tensorflow, or set "
    "TF_USE_LEGACY_KERAS=1 in the environment (tfps-launch does).")


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def check_versions() -> None:
    """Raises ImportError if tf-keras and TensorFlow minor versions differ (they must match)."""
    try:
        tf_version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        return  # tensorflow-cpu, tf-nightly, ...: nothing reliable to compare
    try:
        keras_version = importlib.metadata.version("tf-keras")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"tfps needs tf-keras {'.'.join(map(str, _minor(tf_version)))}.* to "
                          f"match tensorflow {tf_version}; it is not installed. "
                          f"Run: pip install 'tf-keras~={tf_version.rsplit('.', 1)[0]}.0'"
                          ) from None
    if _minor(tf_version) != _minor(keras_version):
        raise ImportError(f"tf-keras {keras_version} does not match tensorflow {tf_version}: "
                          f"their minor versions must be equal. "
                          f"Run: pip install 'tf-keras~={tf_version.rsplit('.', 1)[0]}.0'")


def tf_keras_is_keras3() -> bool:
    """True when `tf.keras` is already resolved to Keras 3 in this process."""
    return _tf.keras_binding()[0] == "keras3"


def tf_imported_with_keras3_paths() -> bool:
    """True when TensorFlow was imported while TF_USE_LEGACY_KERAS was unset.

    TensorFlow then routes import statements (``from tensorflow.keras import layers``) to
    Keras 3 through the package ``__path__`` it built at import time, even if the variable is
    set later; only attribute access (``tf.keras.layers``) still reads the variable lazily.
    """
    return _tf.keras_binding()[1]


def configure() -> None:
    """Sets the process environment tfps relies on; warns if tf.keras is bound to Keras 3."""
    for key, value in TASK_ENV.items():
        os.environ.setdefault(key, value)
    if tfps_command() is not None:
        return
    if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
        warnings.warn(f"TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}: "
                      + _KERAS3_MESSAGE, KerasBindingWarning, stacklevel=3)
    elif tf_keras_is_keras3():
        warnings.warn(_KERAS3_MESSAGE, KerasBindingWarning, stacklevel=3)
    elif tf_imported_with_keras3_paths():
        warnings.warn(_IMPORT_ORDER_MESSAGE, KerasBindingWarning, stacklevel=3)


def require_tf_keras() -> None:
    """Raises `KerasBindingError` unless `tf.keras` is (or will be) tf_keras."""
    if tf_keras_is_keras3() or os.environ.get("TF_USE_LEGACY_KERAS") not in (
            "1", "true", "True"):
        raise KerasBindingError(_KERAS3_MESSAGE)
