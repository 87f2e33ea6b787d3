"""The door to TF's internals, Keras-binding room: what `tf.keras` is bound to, read from TF's
state in ``sys.modules`` without importing anything (`tfps._tf` re-exports it).
"""

from __future__ import annotations

import sys

__all__ = ["keras_binding"]


def keras_binding() -> tuple[str, bool]:
    """``(what tf.keras is bound to, whether TF was imported with Keras 3 import paths)``.

    The first is ``"keras3"``, ``"tf_keras"`` or ``"unbound"``. Reads TF's lazy loader state
    (``tensorflow/python/util/lazy_loader.py``, `KerasLazyLoader`: ``_tfll_initialized``,
    ``_tfll_keras_version``) and the flag ``tensorflow/__init__.py`` sets when it builds its
    import paths (``_tf_uses_legacy_keras``); imports nothing.
    """
    tf = sys.modules.get("tensorflow")
    state = getattr(tf, "__dict__", {}) if tf is not None else {}
    keras3_paths = state.get("_tf_uses_legacy_keras") is False
    bound = state.get("keras")
    if bound is None:
        return "unbound", keras3_paths
    loader = getattr(bound, "__dict__", {})
    if "_tfll_initialized" in loader:  # still TF's lazy loader
        if not loader["_tfll_initialized"]:
            return "unbound", keras3_paths
        return ("keras3" if loader.get("_tfll_keras_version") == "keras_3" else "tf_keras",
                keras3_paths)
    # Resolved: the loader replaced itself with `keras._tf_keras.keras` (Keras 3) or tf_keras.
    name = getattr(bound, "__name__", "")
    return ("keras3" if name == "keras" or name.startswith("keras.") else "tf_keras",
            keras3_paths)
