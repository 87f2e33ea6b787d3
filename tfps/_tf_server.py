"""The door to TF's internals, server room: a ps or worker server without importing TensorFlow.

A ps or worker task runs no Python of its own: it serves the chief's requests from TF's C++
runtime. Importing `tensorflow` builds the whole Python API first (several seconds of CPU on a
small machine, six times over for a cluster of six tasks on one host), so a task server loads
only the extension TF's own `tf.distribute.Server` calls (`tensorflow/python/client/
_pywrap_tf_session.so`: ``TF_NewServer``, ``TF_ServerStart``, ``TF_ServerJoin``,
``TF_ServerTarget``, as tensorflow/python/training/server_lib.py uses them) and hands it the
`ServerDef` as protobuf bytes. Loading the extension loads TF's kernels and its gRPC server;
nothing Python-side is needed to serve. `tfps._tf` re-exports `start_server`; its
requirements check (`requirements`) compares these bytes with TF's own message, once TF is
imported elsewhere (the integration tests).

The `ServerDef` wire format (tensorflow/core/protobuf/tensorflow_server.proto, cluster.proto,
config.proto; field numbers as of TF 2.21):

* ServerDef: cluster = 1 (ClusterDef), job_name = 2, task_index = 3,
  default_session_config = 4 (ConfigProto), protocol = 5;
* ClusterDef: job = 1 (JobDef, repeated); JobDef: name = 1, tasks = 2 (map<int32, string>);
* ConfigProto: intra_op_parallelism_threads = 2, inter_op_parallelism_threads = 5,
  experimental = 16; ConfigProto.Experimental: disable_thread_spinning = 9.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence

__all__ = ["ServerStartError", "load_session_extension", "server_def", "start_server"]

# The extension tf.distribute.Server calls, relative to the tensorflow package, and the one TF
# raises its errors through (errors_impl.py registers its classes there, one per status code).
_EXTENSION = os.path.join("python", "client", "_pywrap_tf_session.so")
_ERRORS = os.path.join("python", "_pywrap_py_exception_registry.so")
_CALLS = ("TF_NewServer", "TF_ServerStart", "TF_ServerJoin", "TF_ServerTarget")
# TF's status codes (tsl/protobuf/error_codes.proto: CANCELLED = 1 ... DATA_LOSS = 15; 16 is
# UNAUTHENTICATED).
_CODES = range(1, 17)


class ServerStartError(RuntimeError):
    """TF could not start a server (as TF's `OpError`: ``(node_def, op, message, ...)``)."""

    def __init__(self, node_def=None, op=None, message="", *args):
        super().__init__(message)
        self.message = message


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def server_def(cluster: Mapping[str, Sequence[str]], job: str, index: int, *,
               intra_op_threads: int = 0, inter_op_threads: int = 0,
               thread_spinning: bool = True) -> bytes:
    """The serialized `ServerDef` of task ``job:index`` of `cluster` (job -> addresses)."""
    jobs = b"".join(
        _bytes(1, _bytes(1, name.encode()) + b"".join(
            _bytes(2, _int(1, i) + _bytes(2, address.encode()))
            for i, address in enumerate(addresses)))
        for name, addresses in cluster.items())
    config = b""
    if intra_op_threads:
        config += _int(2, intra_op_threads)
    if inter_op_threads:
        config += _int(5, inter_op_threads)
    if not thread_spinning:
        config += _bytes(16, _int(9, 1))
    return (_bytes(1, jobs) + _bytes(2, job.encode()) + _int(3, index) +
            (_bytes(4, config) if config else b"") + _bytes(5, b"grpc"))


def _load(root: str, relative: str):
    path = os.path.join(root, relative)
    if not os.path.exists(path):
        return None
    name = os.path.basename(relative).split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_session_extension():
    """TF's ``_pywrap_tf_session`` extension, loaded by path (no ``tensorflow`` import), with
    TF's error registry set up so that a failure raises `ServerStartError` (unset, TF aborts
    the process); None where this TensorFlow lacks either or one of the calls."""
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    errors, session = _load(root, _ERRORS), _load(root, _EXTENSION)
    if errors is None or session is None or not all(hasattr(session, n) for n in _CALLS):
        return None
    errors.PyExceptionRegistry_Init({code: ServerStartError for code in _CODES})
    return session


def start_server(extension, definition: bytes):
    """Starts a server from `definition`; returns ``(join, target)``."""
    server = extension.TF_NewServer(definition)
    extension.TF_ServerStart(server)
    return (lambda: extension.TF_ServerJoin(server)), extension.TF_ServerTarget(server)
