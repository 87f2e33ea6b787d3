"""The tfps exception hierarchy.

Every error tfps raises for bad input is a `TfpsError`, itself a `ValueError`, so callers that
already catch `ValueError` keep working. The message always names the argument (or spec field)
and the value received:

>>> from tfps import errors
>>> try:
...     raise errors.ClusterSpecError("ps[1]: port 'abc' is not an integer", source="x.yaml")
... except ValueError as e:
...     print(e)
cluster spec x.yaml: ps[1]: port 'abc' is not an integer
"""

from __future__ import annotations

import contextlib

__all__ = [
    "TfpsError",
    "ClusterSpecError",
    "ConfigError",
    "KerasBindingError",
    "KerasBindingWarning",
    "TensorFlowCompatibilityError",
    "Preempted",
    "surfaced",
]


class TfpsError(ValueError):
    """Base class of every error tfps raises for bad input."""


class Preempted(SystemExit):
    """Training stopped on request (SIGUSR1) after writing a checkpoint; uncaught, the process
    exits with `tfps.exit_codes.PREEMPTED` (138), which schedulers read as "requeue me".

    Attributes:
      step: the step of the checkpoint written.
    """

    def __init__(self, step: int, code: int):
        super().__init__(code)
        self.step = step


class ClusterSpecError(TfpsError):
    """A cluster description (file, dict, TF_CONFIG, Slurm) is malformed.

    Args:
      message: what is wrong, naming the field and the value received.
      source: where the description came from (a path, ``TF_CONFIG``, ...), or None.
    """

    def __init__(self, message: str, source: str | None = None):
        self.source = source
        self.detail = message
        super().__init__(f"cluster spec {_short_source(source)}: {message}" if source
                         else message)


# A source (a path) longer than this is shown as its start and its end: a 5 000-character
# path must not make the one-line error 5 000 characters long.
_MAX_SOURCE = 120


def _short_source(source) -> str:
    text = str(source)
    if not text.isprintable():  # a newline or a terminal escape in a path: show it escaped
        text = repr(text)[1:-1]
    if len(text) <= _MAX_SOURCE:
        return text
    return f"{text[:40]}...{text[-(_MAX_SOURCE - 43):]}"


class ConfigError(TfpsError):
    """An argument of a tfps API has a value it cannot accept."""


class KerasBindingError(ImportError):
    """`tf.keras` is bound to Keras 3, which cannot train under ParameterServerStrategy."""


class KerasBindingWarning(UserWarning):
    """`tf.keras` is bound to Keras 3; Keras `fit` under PSS will not work in this process."""


class TensorFlowCompatibilityError(ImportError):
    """The installed TensorFlow lacks an internal tfps relies on (see `tfps._tf`)."""


@contextlib.contextmanager
def surfaced():
    """Inside the block, a `TfpsError` raised while TensorFlow traced user code (a layer's
    check of its input, inside a training step) comes out as itself: autograph wraps it in a
    ``StagingError`` and Keras in "Exception encountered when calling layer", pages of text
    around the one line that says what is wrong. Other errors pass unchanged.

    >>> with surfaced():
    ...     try:
    ...         raise ConfigError("Argument `x` must be 1. Received: x=2")
    ...     except ConfigError as e:
    ...         raise RuntimeError("in user code: ...") from e
    Traceback (most recent call last):
    ...
    tfps.errors.ConfigError: Argument `x` must be 1. Received: x=2
    """
    try:
        yield
    except TfpsError:
        raise
    except Exception as e:
        inner, seen = e, set()
        while inner is not None and id(inner) not in seen and not isinstance(inner, TfpsError):
            seen.add(id(inner))
            inner = inner.__cause__ or inner.__context__
        if inner is None or id(inner) in seen:
            raise
        raise inner from None
