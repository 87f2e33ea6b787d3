"""The door to TF's internals, Keras room: what `tf.keras` is bound to, read from TF's state in
``sys.modules`` without importing anything, and the tf_keras internals the Trainer relies on
(the legacy optimizer's hyperparameter table and slots, a model's evaluation shards).
`tfps._tf` re-exports them and checks what they rely on.
"""

from __future__ import annotations

import sys

__all__ = ["create_slots", "keras3_schedule", "keras_binding", "keras_symbolic_build",
           "optimizer_hyper", "pin_hyperparameters", "pss_evaluation_shards", "read_hyper",
           "set_optimizer_hyper"]


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

def optimizer_hyper(optimizer, name: str):
    """The raw hyperparameter of a tf_keras legacy optimizer (`OptimizerV2._hyper`): a float,
    a schedule, a variable or a callable; a pinned number (`pin_hyperparameters`) as the
    number."""
    value = optimizer._hyper[name]
    return value.value if isinstance(value, _Constant) else value


def set_optimizer_hyper(optimizer, name: str, value) -> None:
    """Replaces a hyperparameter in `OptimizerV2._hyper` directly: `optimizer.learning_rate =
    fn` would write the function into an existing variable (`_set_hyper` -> `set_value`)."""
    optimizer._hyper[name] = value


def read_hyper(optimizer, name: str):
    """A hyperparameter as the optimizer reads it (`OptimizerV2._get_hyper`: calls a callable)."""
    return optimizer._get_hyper(name)


def keras3_schedule(optimizer):
    """The schedule object behind a Keras 3 / tf_keras (new) optimizer's learning rate, or None
    (``BaseOptimizer._learning_rate``, keras/src/optimizers/base_optimizer.py)."""
    lr = getattr(optimizer, "_learning_rate", None)
    return lr if callable(lr) and hasattr(lr, "get_config") else None


def keras_symbolic_build() -> bool:
    """True while tf_keras infers a layer's output on placeholders (building a functional
    model, `clone_model`): `Layer._infer_output_signature` (tf_keras/src/engine/base_layer.py)
    calls the layer in a scratch FuncGraph named ``<layer name>_scratch_graph``; older paths
    use the backend's global ``keras_graph``. Nothing traced there ever runs."""
    import tensorflow as tf

    name = getattr(tf.compat.v1.get_default_graph(), "name", "") or ""
    return name.endswith("_scratch_graph") or name == "keras_graph"


def pss_evaluation_shards(model) -> int:
    """The ``pss_evaluation_shards`` a tf_keras model was compiled with (`Model.compile` sets
    ``_pss_evaluation_shards``, tf_keras/src/engine/training.py); 0 if none."""
    return int(getattr(model, "_pss_evaluation_shards", 0) or 0)


def create_slots(optimizer, variables) -> None:
    """Creates the optimizer's slots for `variables` now, changing no value
    (`OptimizerV2._create_all_weights`, optimizer_v2.py). Restoring a checkpoint needs them
    first: restored into a ShardedVariable's container before its shards' slots exist, slot
    values are silently dropped at the first update (docs/tensorflow-notes.md)."""
    optimizer._create_all_weights(list(variables))


class _Constant:
    """A hyperparameter compiled into the traced closures (no variable, no read from ps)."""

    def __init__(self, value: float):
        self.value = value

    def __call__(self, *args):
        return self.value

    def __repr__(self) -> str:
        return f"constant {self.value!r}"


def pin_hyperparameters(optimizer) -> bool:
    """Makes the plain-number hyperparameters of a tf_keras legacy optimizer constants of the
    traced closures instead of variables on a ps (``OptimizerV2._hyper``; `_create_hypers`
    makes a variable of every hyperparameter that is not callable, and every update then
    reads it from its ps). Returns True if one changed since the last call: a number set
    after the last pinning (``optimizer.learning_rate = 0.01``), which needs a new trace."""
    changed = False
    for name, value in list(optimizer._hyper.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            optimizer._hyper[name] = _Constant(float(value))
            changed = True
    return changed
