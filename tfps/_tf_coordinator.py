"""The door to TF's internals, second room: the coordinator's closures, per worker.

`tfps._tf` is the one door to TensorFlow's internals; it re-exports these functions and checks
what they rely on (`trackable`) in its `_requirements()`, once, when TensorFlow is first
required. They live here only to keep each module under 400 lines. Imports nothing of TF:
the objects they touch are handed in.

Everything here depends on tensorflow/python/distribute/coordinator/cluster_coordinator.py:
`ClusterCoordinator._cluster`; `Cluster.workers` and `Cluster.closure_queue`; a `Worker` runs
its closures on one thread of its own (`Worker._process_queue` calls
``self._process_closure(closure)`` for each), and that thread ends each closure through the
queue: `_CoordinatedClosureQueue.mark_finished` (done), `put_back` (the worker failed, or a
transient error: the closure runs again, maybe elsewhere) or `mark_failed` (the error goes to
the user); `Closure._concrete_function` / `Closure._function`, the function a closure runs;
`Cluster.failure_handler` (a `WorkerPreemptionHandler`), whose thread holds
``_cluster_update_lock`` while it reconnects to a restarted worker (`update_server_def`), and
whose `stop` takes that lock.
"""

from __future__ import annotations

import threading

__all__ = ["closure_name", "track_closures", "trackable", "unblock_exit"]

_OUTCOMES = (("mark_finished", "done"), ("put_back", "put_back"), ("mark_failed", "failed"))
# Set on a tracked Cluster: tracking twice would report every closure twice.
_TRACKED = "_tfps_tracked"


def trackable(module) -> bool:
    """Whether `module` (TF's cluster_coordinator) has what `track_closures` wraps."""
    worker = getattr(module, "Worker", None)
    queue = getattr(module, "_CoordinatedClosureQueue", None)
    process = getattr(worker, "_process_closure", None)
    loop = getattr(worker, "_process_queue", None)
    handler = getattr(module, "WorkerPreemptionHandler", None)
    return (callable(process) and callable(loop)
            and "_cluster_update_lock" in handler.__init__.__code__.co_names
            and "_cluster_update_lock" in handler.stop.__code__.co_names
            and "failure_handler" in module.Cluster.__init__.__code__.co_names
            and "_process_closure" in loop.__code__.co_names
            and all(callable(getattr(queue, name, None)) for name, _ in _OUTCOMES)
            and "_cluster" in module.ClusterCoordinator.__init__.__code__.co_names
            and {"workers", "closure_queue"} <= set(module.Cluster.__init__.__code__.co_names))


def track_closures(coordinator, listener) -> None:
    """Tells `listener` which worker holds which closure, as the coordinator runs them.

    ``listener.started(worker_index, closure_key, function_name)`` when a worker's thread takes
    a closure; ``listener.ended(worker_index, outcome)`` when it lets it go, `outcome` being
    ``"done"``, ``"put_back"`` or ``"failed"`` (the module docstring). A closure put back and
    run again has the same key. Idempotent per coordinator (there is one per strategy).
    """
    cluster = coordinator._cluster
    if getattr(cluster, _TRACKED, False):
        return
    local = threading.local()
    for worker in cluster.workers:
        original = worker._process_closure

        def process(closure, _index=worker.worker_index, _original=original):
            local.worker = _index
            listener.started(_index, id(closure), closure_name(closure))
            try:
                return _original(closure)
            finally:
                local.worker = None

        worker._process_closure = process
    queue = cluster.closure_queue
    for method, outcome in _OUTCOMES:
        original = getattr(queue, method)

        def hook(*args, _original=original, _outcome=outcome):
            index = getattr(local, "worker", None)
            if index is not None:  # the worker threads' calls; not the coordinator's own
                listener.ended(index, _outcome)
            return _original(*args)

        setattr(queue, method, hook)
    setattr(cluster, _TRACKED, True)


def closure_name(closure) -> str:
    """The name of the function a coordinator closure runs."""
    concrete = getattr(closure, "_concrete_function", None)
    name = getattr(concrete, "name", None)
    if name is None:
        function = getattr(closure, "_function", None)
        name = getattr(function, "__name__", "?")
    return name.decode() if isinstance(name, bytes) else str(name)


def unblock_exit(coordinator_ref) -> bool:
    """Lets the process exit while TF reconnects to a restarted worker; True if it was.

    TF's coordinator stops its failure handler when it is collected (`ClusterCoordinator.
    __del__`, at the interpreter's exit), and `WorkerPreemptionHandler.stop` takes the lock
    that the handler's thread holds during `update_server_def`. That thread is a daemon: at
    exit it is frozen the moment it needs the GIL again, lock held, and the exit waits for
    the lock forever. Called at exit (`atexit`, before that), with a weak reference to the
    coordinator: while a reconnection is in flight, `stop` no longer waits for it.
    """
    coordinator = coordinator_ref()
    cluster = getattr(coordinator, "_cluster", None)
    handler = getattr(cluster, "failure_handler", None)
    lock = getattr(handler, "_cluster_update_lock", None)
    if lock is None or not lock.locked():
        return False

    def stop():
        handler._should_preemption_thread_run = False

    handler.stop = stop
    return True
