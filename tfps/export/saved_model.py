"""`export_saved_model`: a plain SavedModel from a model whose variables live on ps tasks.

The export is an un-sharded copy of the model (`tfps.export.unsharded`), served by a
``serving_default`` signature (`tfps.export.signature`), written beside its path and renamed
into place (`tfps.export.paths`). What it writes holds only the copy's plain variables and the
serving function: it loads with ``tf.saved_model.load`` in a process that has no cluster and
never imports tfps or Keras, and ``saved_model_cli show --all --dir PATH`` describes it.

>>> import tfps, tensorflow as tf
>>> strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1))
>>> def build():
...     ids = tf.keras.Input([4], dtype=tf.int64, name="ids")
...     emb = tf.keras.layers.Embedding(100_000, 8)(ids)     # sharded over the 2 ps
...     return tf.keras.Model(ids, tf.keras.layers.Dense(1)(tf.keras.layers.Flatten()(emb)))
>>> with strategy.scope():
...     model = build()
>>> export_saved_model(model, "/tmp/export_doc/1", overwrite=True)  # doctest: +SKIP
'/tmp/export_doc/1'

Then, anywhere (plain TensorFlow)::

    serve = tf.saved_model.load("/tmp/export_doc/1").signatures["serving_default"]
    serve(ids=tf.constant([[1, 2, 3, 4]], tf.int64))   # {'dense': <tf.Tensor: shape=(1, 1)>}
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from collections.abc import Callable

from tfps import _tf, validate
from tfps.checkpoints import storage
from tfps.errors import ConfigError
from tfps.export import paths
from tfps.export.signature import serving_function
from tfps.export.unsharded import logical_variables, unsharded_copy
from tfps.strategy import tf_variable

tf = _tf.require()

__all__ = ["export_saved_model"]

log = logging.getLogger(__name__)

SERVING_KEY = "serving_default"


def export_saved_model(model, path, *, builder: Callable | None = None,
                       serving_fn: Callable | str | None = None, input_signature=None,
                       overwrite: bool = False) -> str:
    """Writes `model` as a SavedModel with un-sharded variables and a ``serving_default``.

    Call it on the chief, outside ``strategy.scope()``, once the closures that update the
    model are done (`tfps.Trainer.export` and `tfps.keras.export` see to both).

    Args:
      model: a tf_keras or Keras 3 model, or a `tf.Module`; its variables may be sharded and
        live on ps tasks (they are read from there).
      path: the SavedModel's directory (for TF Serving, a version directory such as
        ``/models/recsys/1``). Missing parents are created.
      builder: a zero-argument function that builds the same model (outside any strategy);
        default Keras's `clone_model`. Required for a `tf.Module` or a subclassed model.
      serving_fn: ``serving_fn(model, inputs) -> tensor | list | dict`` on `input_signature`,
        or the name of a `tf.function` method of the model with an ``input_signature``;
        default for a Keras model: its call with ``training=False`` on its inputs.
      input_signature: a `tf.TensorSpec`, or a list or dict of them (named inputs).
      overwrite: replace a SavedModel already at `path` (in one step: readers see the old
        one or the new one). Anything else at `path` is never replaced.

    Returns:
      The SavedModel's absolute path.

    Raises:
      tfps.errors.ConfigError: a bad `path` (exists and is not a SavedModel, exists without
        `overwrite`, not under a writable directory), a missing `builder`/`serving_fn`, a
        builder of another model, a serving function that reads other variables than the
        copy's. Nothing is written then.

    Failure semantics: the SavedModel is written into ``.<name>.tmp.<host>.<pid>.<random>``
    beside `path` and renamed into place when complete; a crash or kill mid-way leaves `path`
    as it was (absent, or the previous export), and the next export to `path` removes the
    temporary directory of a process that is gone. A write the storage refuses (a full disk,
    no permission) ends the process with one line and exit 1 (`tfps.checkpoints.storage`).
    """
    target = paths.check_target(path, overwrite=validate.boolean("overwrite", overwrite))
    _check_function("builder", builder, ())
    if not isinstance(serving_fn, str):
        _check_function("serving_fn", serving_fn, ("model", "inputs"))
    elif not serving_fn.isidentifier():
        raise validate.fail("serving_fn", serving_fn, "a method name, a function taking "
                                                      "(model, inputs) or None")
    start = time.perf_counter()
    copy = unsharded_copy(model, builder)
    variables = [tf_variable(holder) for _, holder, _ in logical_variables(copy)]
    tables = _dynamic_tables(model, copy)  # before the trace: the serving function reads them
    serve = serving_function(copy, serving_fn, input_signature, names_from=model)
    concrete = serve.get_concrete_function()  # traced now: a bad serving_fn writes nothing
    _check_captures(concrete, variables)
    root = tf.Module(name="export")
    root.model_variables = variables  # what the serving function reads, tracked
    root.dynamic_tables = tables
    root.serve = serve

    def write(directory: str) -> None:
        tf.saved_model.save(root, directory, signatures={SERVING_KEY: serve})

    try:
        paths.write_atomically(target, write)
    except (tf.errors.OpError, OSError) as e:  # a full disk, no permission: one line, exit 1
        reason = storage.storage_error(e)
        if reason is None:
            raise
        kept = ("the previous export there is kept" if os.path.lexists(target)
                else "nothing was written")
        raise storage.fail("export", target, reason, kept) from None
    log.info("tfps: exported %d variables to %s in %.1fs", len(variables), target,
             time.perf_counter() - start)
    return target


def _check_function(name: str, fn, params: tuple[str, ...]) -> None:
    """`fn` is None or a function that takes `params` (checked before anything is built)."""
    if fn is None:
        return
    what = f"a function taking ({', '.join(params)}) or None"
    if not callable(fn):
        raise validate.fail(name, fn, what)
    try:
        inspect.signature(fn).bind(*params)
    except TypeError:
        raise validate.fail(name, fn, what) from None
    except ValueError:
        pass  # no signature to read (a builtin): not judged


def _dynamic_tables(model, copy) -> list:
    """The local serving tables of the copy's `DynamicEmbedding` layers, filled from the
    trained model's (`tfps.layers.serving.copy_tables`); none for a model without such
    layers, whose process never imported `tfps.layers`."""
    if "tfps.layers.dynamic_embedding" not in sys.modules:
        return []
    from tfps.layers.serving import copy_tables

    return list(copy_tables(model, copy))


def _check_captures(concrete, variables: list) -> None:
    ours = {id(v) for v in variables}
    foreign = [v.name for v in concrete.variables if id(v) not in ours]
    if foreign:
        raise ConfigError(
            f"Argument `serving_fn` must read the variables of the model it is given (the "
            f"un-sharded copy), not others: it reads {', '.join(foreign[:4])}"
            f"{', ...' if len(foreign) > 4 else ''}. Received: a serving_fn that uses another "
            f"model")
