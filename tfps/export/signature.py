"""The ``serving_default`` signature of an export: named inputs in, a dict of outputs out.

A serving signature takes named tensors and returns named tensors. `serving_function` makes
one `tf.function` with one parameter per input (the parameter names are the signature's input
keys, what ``saved_model_cli show`` lists and a client sends):

* a Keras model needs nothing: its inputs give the signature (``model.inputs``: shapes,
  dtypes, names) and the model's call on them the outputs (``model.output_names``);
* any model (a `tf.Module`) is served by ``serving_fn(model, inputs)`` on an
  ``input_signature``: one `tf.TensorSpec` (a single input, ``inputs`` is the tensor), a list
  of them (``inputs`` is the list), or a dict of them (``inputs`` is the dict, the keys name
  the inputs);
* or by the name of a `tf.function` method of the model that has an ``input_signature``
  (``serving_fn="serve"``), looked up on the copy being exported.

Outputs: a dict of tensors as returned; one tensor is ``output_0``; a list ``output_<i>``.

>>> import tensorflow as tf
>>> m = tf.Module(); m.w = tf.Variable([[2.0], [1.0]])
>>> fn = serving_function(m, lambda model, x: x @ model.w,
...                       tf.TensorSpec([None, 2], tf.float32, name="features"))
>>> fn(features=tf.ones([3, 2]))["output_0"].shape.as_list()
[3, 1]
"""

from __future__ import annotations

import inspect
import keyword
import re
from collections.abc import Callable

from tfps import _tf
from tfps.errors import ConfigError
from tfps.validate import describe

tf = _tf.require()

__all__ = ["keras_input_signature", "serving_function"]

_NOT_IN_NAME = re.compile(r"[^0-9A-Za-z_]")


def _is_keras_model(model) -> bool:
    return hasattr(model, "inputs") and hasattr(model, "outputs") and hasattr(model, "layers")


def _identifier(name: str, used: set, fallback: str) -> str:
    """`name` as a Python identifier not in `used` (a signature key is a parameter name)."""
    base = _NOT_IN_NAME.sub("_", (name or "").split(":")[0]) or fallback
    if base[0].isdigit() or keyword.iskeyword(base):
        base = f"{fallback}_{base}"
    candidate, n = base, 1
    while candidate in used:
        candidate, n = f"{base}_{n}", n + 1
    used.add(candidate)
    return candidate


def keras_input_signature(model):
    """The `tf.TensorSpec` of each input of a built functional or sequential Keras model, named
    by the model's input names: one spec for one input, else a list."""
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        raise ConfigError(f"Argument `input_signature` is required: this "
                          f"{type(model).__name__} has no known inputs (a subclassed model "
                          f"never called on an Input). Received: input_signature=None")
    names = list(getattr(model, "input_names", None) or [t.name for t in inputs])
    used: set = set()
    specs = [tf.TensorSpec(tuple(t.shape), tf.as_dtype(t.dtype),
                           name=_identifier(n, used, f"input_{i}"))
             for i, (t, n) in enumerate(zip(inputs, names))]
    return specs[0] if len(specs) == 1 else specs


def _output_names(model) -> list[str] | None:
    names = getattr(model, "output_names", None)
    return list(names) if names else None


def _as_outputs(result, names: list[str] | None) -> dict:
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items()}
    flat = list(result) if isinstance(result, (list, tuple)) else [result]
    if names is None or len(names) != len(flat):
        names = [f"output_{i}" for i in range(len(flat))]
    used: set = set()
    return {_identifier(n, used, f"output_{i}"): t for i, (n, t) in enumerate(zip(names, flat))}


def _method(model, name: str):
    fn = getattr(model, name, None)
    specs = getattr(fn, "input_signature", None)
    if fn is None or not callable(fn) or specs is None:
        raise ConfigError(f"Argument `serving_fn` names a method of the model, so the model "
                          f"must have a tf.function `{name}` with an input_signature. "
                          f"Received: serving_fn={describe(name)}")
    return fn, list(specs)


def serving_function(model, serving_fn: Callable | str | None = None, input_signature=None,
                     *, names_from=None):
    """A `tf.function` with one named parameter per input, returning a dict of tensors.

    Args:
      model: the model to serve (the un-sharded copy).
      serving_fn: ``serving_fn(model, inputs)``, the name of a `tf.function` method of `model`
        with an ``input_signature``, or None for a Keras model (its call, ``training=False``).
      input_signature: a `tf.TensorSpec`, a list or a dict of them; for a Keras model default
        from its inputs. Ignored with a method name.
      names_from: the Keras model whose input and output names the signature takes (default
        `model`): the model that was trained, whose auto-generated layer names (``input_1``,
        ``dense_2``) a copy built later does not share.

    Raises:
      tfps.errors.ConfigError: what the serving function needs is missing or malformed.
    """
    if isinstance(serving_fn, str):
        method, specs = _method(model, serving_fn)
        input_signature = specs[0] if len(specs) == 1 else specs
        structure = _structure(input_signature)

        def call(inputs):
            return method(*inputs) if structure == "list" else method(inputs)
    else:
        if serving_fn is None:
            if not _is_keras_model(model):
                raise ConfigError(f"Argument `serving_fn` is required for a model that is not "
                                  f"a Keras model: serving_fn(model, inputs) with an "
                                  f"input_signature, or the name of a tf.function method. "
                                  f"Received: serving_fn=None for a {type(model).__name__}")
            if input_signature is None:
                input_signature = keras_input_signature(names_from or model)

            def serving_fn(m, inputs):
                return m(inputs, training=False)
        elif not callable(serving_fn):
            raise ConfigError(f"Argument `serving_fn` must be a function (model, inputs), a "
                              f"method name or None. Received: serving_fn={describe(serving_fn)}")
        if input_signature is None:
            raise ConfigError("Argument `input_signature` is required with a `serving_fn`: a "
                              "tf.TensorSpec, or a list or dict of them. "
                              "Received: input_signature=None")
        structure = _structure(input_signature)

        def call(inputs, _fn=serving_fn):
            return _fn(model, inputs)
    keys, names, specs = _named_specs(input_signature, structure)
    named = names_from if names_from is not None else model
    out_names = _output_names(named) if _is_keras_model(named) else None

    def serve(*args):
        if structure == "dict":  # the caller's own keys (the parameter names are identifiers)
            inputs = dict(zip(keys, args))
        elif structure == "list":
            inputs = list(args)
        else:
            inputs = args[0]
        return _as_outputs(call(inputs), out_names)

    # The parameter names become the signature's input keys (tf.function reads them through
    # inspect.signature, which honours __signature__).
    serve.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    serve.__name__ = "serve"
    return tf.function(serve, input_signature=specs, autograph=False)


def _structure(signature) -> str:
    if isinstance(signature, tf.TensorSpec):
        return "single"
    if isinstance(signature, dict) and signature and all(
            isinstance(k, str) and isinstance(v, tf.TensorSpec) for k, v in signature.items()):
        return "dict"
    if isinstance(signature, (list, tuple)) and signature and all(
            isinstance(v, tf.TensorSpec) for v in signature):
        return "list"
    raise ConfigError(f"Argument `input_signature` must be a tf.TensorSpec, or a non-empty "
                      f"list or dict of them. Received: input_signature={describe(signature)}")


def _named_specs(signature, structure: str) -> tuple[list, list[str], list]:
    """(the inputs' own keys, their parameter names, the specs renamed to those names)."""
    used: set = set()
    if structure == "dict":
        items = list(signature.items())
    elif structure == "list":
        items = [(s.name, s) for s in signature]
    else:
        items = [(signature.name or "inputs", signature)]
    names = [_identifier(n, used, f"input_{i}") for i, (n, _) in enumerate(items)]
    specs = [tf.TensorSpec(s.shape, s.dtype, name=n) for n, (_, s) in zip(names, items)]
    return [k for k, _ in items], names, specs
