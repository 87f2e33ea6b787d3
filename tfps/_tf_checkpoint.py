"""The door to TF's internals, checkpoint room: one traced write for every checkpoint save.

`tfps._tf` is the one door to TensorFlow's internals; it re-exports `traced_write_checkpoint`
and checks what it relies on in its `_requirements()`, once, when TensorFlow is first required.
It lives here only to keep each module under 400 lines; the TF modules it needs are handed in
by the door (`_tf.checkpoint_internals`).

Why (docs/tensorflow-notes.md, "Memory that grows with every save", has the measurement): TF
traces a new function at every eager save of variables on several tasks (functional_saver.py,
`MultiDeviceSaver.save`: ``tf_function_save``); each trace's components are registered and
instantiated on every ps and never released (process_function_library_runtime.cc
`ReleaseMultiDeviceHandle`: "Releasing a multi-device component handle on a remote device is
not yet implemented"), so each ps grows with every save. Inside a function, `Checkpoint._write`
builds the same save ops without an inner function, so one traced write, reused while what is
saved stays the same, leaves nothing behind. `CheckpointManager.save` calls
``Checkpoint._write(prefix, options)`` with its bookkeeping (the state file, the removal of old
checkpoints) in ``options.experimental_write_callbacks``: they run after the traced write.
"""

from __future__ import annotations

import inspect
import os

__all__ = ["traced_write_checkpoint"]

_CLASS = None


def _saved_structure(checkpoint, internals) -> tuple:
    """What a write of `checkpoint` saves: ``(key, objects)``. The key holds the identity of
    every trackable it reaches, the optimizers' slot variables included
    (`util.list_objects` over an `ObjectGraphView`, tensorflow/python/checkpoint/util.py and
    graph_view.py), with the ``created`` flag of objects whose saved tensors depend on it
    (DynamicEmbedding tables); `objects` keeps those identities from being reused. A traced
    write stays valid while the key is the same."""
    graph_view, util, sharded_variable = internals
    objects = []
    for obj in util.list_objects(graph_view.ObjectGraphView(checkpoint)):
        # An optimizer's slot of a sharded variable is a new ShardedVariable at every
        # traversal (tf_keras OptimizerV2.get_slot wraps the slot shards); its shards are not.
        if isinstance(obj, sharded_variable.ShardedVariableMixin):
            objects.extend(obj.variables)
        else:
            objects.append(obj)
    return tuple((id(o), getattr(o, "created", None)) for o in objects), objects


def _plain_options(options) -> bool:
    """Whether `options` (a `tf.train.CheckpointOptions` or None) sets nothing but write
    callbacks (anything else takes TF's own path)."""
    if options is None:
        return True
    return not (options.experimental_io_device or options.experimental_enable_async_checkpoint
                or getattr(options, "enable_async", False)
                or options.experimental_sharding_callback is not None
                or getattr(options, "experimental_skip_slot_variables", False))


def traced_write_checkpoint(tf, internals, **objects):
    """A `tf.train.Checkpoint` of `objects` whose writes all run one traced function, traced
    again only when what it saves changes (see the module docstring)."""
    global _CLASS
    if _CLASS is None:

        class TracedWriteCheckpoint(tf.train.Checkpoint):
            def _write(self, file_prefix, options=None):
                callbacks = list((options.experimental_write_callbacks or ())
                                 if options is not None else ())
                if (tf.inside_function() or not isinstance(file_prefix, str) or
                        not _plain_options(options)):
                    return super()._write(file_prefix, options)  # TF's own path
                key, saved = _saved_structure(self, internals)
                cached = self.__dict__.get("_tfps_traced_write")
                if cached is None or cached[0] != key:
                    host = tf.constant(0).device  # this task's CPU, fully named

                    def write_fn(prefix):
                        # The full name: checkpoint.py places the object graph on "/cpu:0",
                        # which must name this task or its tensors make a shard of their own.
                        with tf.device(host):
                            return super(TracedWriteCheckpoint, self)._write(prefix)

                    # Set through __dict__: no checkpoint dependency on the function.
                    cached = (key, tf.function(write_fn, autograph=False), saved)
                    self.__dict__["_tfps_traced_write"] = cached
                tf.io.gfile.makedirs(os.path.dirname(file_prefix) or ".")
                cached[1](tf.constant(file_prefix, tf.string))
                for callback in callbacks:  # CheckpointManager's state file and sweep
                    if inspect.signature(callback).parameters:
                        callback(file_prefix)
                    else:
                        callback()
                return file_prefix

        _CLASS = TracedWriteCheckpoint
    return _CLASS(**objects)


def requirements(tf, internals) -> list[tuple]:
    """What the traced write relies on, as the door's `_requirements` lists it."""
    graph_view, util, _ = internals
    return [
        ("Checkpoint._write and CheckpointOptions.experimental_write_callbacks",
         "tensorflow/python/checkpoint/checkpoint.py, checkpoint_options.py",
         lambda: callable(getattr(tf.train.Checkpoint, "_write", None)) and hasattr(
             tf.train.CheckpointOptions(), "experimental_write_callbacks")),
        ("util.list_objects and graph_view.ObjectGraphView",
         "tensorflow/python/checkpoint/util.py, graph_view.py",
         lambda: callable(getattr(util, "list_objects", None)) and
         callable(getattr(graph_view, "ObjectGraphView", None))),
    ]
