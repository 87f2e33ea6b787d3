"""An un-sharded copy of a model whose variables live on ps tasks.

A SavedModel must hold plain variables: one holding `ShardedVariable`s does not load back with
`tf.saved_model.load` (tensorflow#60560), and serving systems want one tensor per variable.
`unsharded_copy` builds a fresh model *outside* any strategy (from a builder, or Keras's
`clone_model`), so its variables are plain ones on this process's CPU, and assigns each the
concatenation of the source variable's shards, read from the ps tasks.

Variables are paired by position in the models' listings (``model.weights`` for tf_keras,
``model.variables`` for Keras 3 and `tf.Module`), with a sharded variable's shards put back
together first; the count and every shape are checked, so a builder that makes another model
is refused with the first variable that differs.

>>> import tfps, tensorflow as tf
>>> strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1))
>>> def build():
...     m = tf.Module(); m.table = tf.Variable(tf.zeros([100_000, 8]), name="table")
...     return m
>>> with strategy.scope():
...     model = build()                         # the table: two shards, one per ps
>>> copy = unsharded_copy(model, builder=build)
>>> type(copy.table).__name__, copy.table.shape.as_list()   # doctest: +SKIP
('ResourceVariable', [100000, 8])
"""

from __future__ import annotations

from collections.abc import Callable

from tfps import _tf
from tfps.errors import ConfigError
from tfps.strategy import is_keras3, shards, tf_variable

tf = _tf.require()

__all__ = ["full_value", "logical_variables", "unsharded_copy"]


def _is_tf_keras(obj) -> bool:
    return type(obj).__module__.startswith("tf_keras.") or any(
        c.__module__.startswith("tf_keras.") for c in type(obj).__mro__)


def _listing(model) -> list:
    if is_keras3(model):
        return list(model.variables)
    if _is_tf_keras(model):
        return list(model.weights)
    return list(model.variables)


def logical_variables(model) -> list[tuple[str, object, list]]:
    """``(name, holder, shards)`` for every variable of `model`, trainable or not, in its
    listing order. A sharded variable appears once (tf_keras lists its shards one by one);
    `holder` is what to assign to (a Keras 3 variable, or the TF variable)."""
    out, seen = [], set()
    for var in _listing(model):
        holder, tf_var = var, tf_variable(var)
        container = _tf.sharded_container(tf_var)
        if container is not None:
            holder = tf_var = container
        if id(tf_var) in seen:
            continue
        seen.add(id(tf_var))
        parts = shards(tf_var)
        name = var.path if is_keras3(var) else parts[0].name.split(":")[0]
        out.append((name.rsplit("/part_0", 1)[0] if name.endswith("/part_0") else name,
                    holder, parts))
    return out


def full_shape(parts) -> tf.TensorShape:
    """The shape of the variable the shards `parts` make up (shards split the first axis)."""
    first = parts[0].shape
    if len(parts) == 1:
        return first
    return tf.TensorShape([sum(int(p.shape[0]) for p in parts)]).concatenate(first[1:])


def full_value(parts) -> tf.Tensor:
    """The whole value of a variable from its shards, read onto this process."""
    if len(parts) == 1:
        return tf.identity(parts[0].read_value())
    return tf.concat([p.read_value() for p in parts], axis=0)


def _build(model, builder: Callable | None):
    if builder is not None:
        if not callable(builder):
            raise ConfigError(f"Argument `builder` must be a function that builds the model. "
                              f"Received: builder={builder!r:.80}")
        return builder()
    if is_keras3(model):
        import keras

        clone = keras.models.clone_model
    elif _is_tf_keras(model):
        import tf_keras

        clone = tf_keras.models.clone_model
    else:
        raise ConfigError(f"Argument `builder` is required for a model that is not a Keras "
                          f"model (a function that builds the same model, called outside "
                          f"any strategy). Received: builder=None for a "
                          f"{type(model).__name__}")
    try:
        return clone(model)
    except (ValueError, TypeError, NotImplementedError) as e:  # e.g. a subclassed model
        raise ConfigError(f"Argument `builder` is required: Keras cannot clone this "
                          f"{type(model).__name__} ({' '.join(str(e).split())[:160]}). "
                          f"Received: builder=None") from None


def unsharded_copy(model, builder: Callable | None = None):
    """A copy of `model` with plain variables on this process, holding `model`'s values.

    Call it outside ``strategy.scope()``, after every closure that updates `model` is done.

    Args:
      model: a tf_keras or Keras 3 model, or a `tf.Module`, whose variables may be sharded
        and live on ps tasks.
      builder: a zero-argument function that builds the same model (built: its variables
        exist). Default: Keras's `clone_model` for Keras models; required for a
        `tf.Module` and for a Keras model `clone_model` cannot copy (subclassed).

    Returns:
      The copy.

    Raises:
      tfps.errors.ConfigError: called inside a strategy's scope, no builder for a
        `tf.Module`, or a builder whose model has other variables (count or shapes).
    """
    if tf.distribute.has_strategy():
        raise ConfigError("An export must be made outside `strategy.scope()` (its copy must "
                          "hold plain variables, not variables on ps tasks). Received: a "
                          f"call inside the scope of {type(tf.distribute.get_strategy()).__name__}")
    with tf.device("/device:CPU:0"):
        copy = _build(model, builder)
    source, target = logical_variables(model), logical_variables(copy)
    if not source:
        raise ConfigError("Argument `model` has no variables to export (build it first). "
                          f"Received: model={type(model).__name__}")
    _check_pairs(source, target)
    for (_, _, parts), (_, holder, _) in zip(source, target):
        holder.assign(full_value(parts))
    return copy


def _check_pairs(source: list, target: list) -> None:
    if len(source) != len(target):
        raise ConfigError(
            f"Argument `builder` must build a model with the variables of `model`: the model "
            f"has {len(source)} variables ({_names(source)}), the built one {len(target)} "
            f"({_names(target)}). Received: a builder of another model")
    for i, ((name, _, parts), (copy_name, holder, _)) in enumerate(zip(source, target)):
        shape, copy_shape = full_shape(parts), tf_variable(holder).shape
        dtype, copy_dtype = parts[0].dtype, tf_variable(holder).dtype
        if shape != copy_shape or dtype != copy_dtype:
            raise ConfigError(
                f"Argument `builder` must build a model with the variables of `model`: "
                f"variable {i} is {name} {shape.as_list()} {dtype.name} in the model and "
                f"{copy_name} {copy_shape.as_list()} {copy_dtype.name} in the built one. "
                f"Received: a builder of another model")


def _names(variables: list, shown: int = 4) -> str:
    names = [name for name, _, _ in variables]
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
