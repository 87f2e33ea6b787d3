"""The task server: what a ps or worker task runs. No user code runs there.

``python -m tfps.server`` serves the task that ``TF_CONFIG`` (or Slurm) describes, or the one
named by ``--spec FILE --task worker:1``. It blocks until the process is killed; the
coordinator sends it work.

It does not import TensorFlow's Python API: it loads the extension `tf.distribute.Server` calls
and starts TF's C++ server directly (`tfps._tf_server`), a second instead of several on a
small machine; a TensorFlow without that extension is served through `tf.distribute.Server`.
TF's thread pools spin only where the host has cores to spare (`tfps.policy.thread_spinning`).
"""

from __future__ import annotations

import os
import sys

from tfps import _cli, _env, _tf_server, policy
from tfps.cluster import Cluster, TaskId, port_in_use, split_address, task_from_env
from tfps.errors import TfpsError

_env.configure()

_PROG = "tfps.server"


class ServeError(TfpsError):
    """The task's TF server could not start (its port is taken, its host is not this one)."""


def serve(cluster: Cluster, task: TaskId) -> None:
    """Starts the TF server of `task` (a ps or worker task of `cluster`) and blocks forever."""
    if task.type not in ("ps", "worker"):
        raise ServeError(f"only ps and worker tasks run a task server; got task '{task}'")
    address = cluster.address(task)  # raises if the task is not in the cluster
    port = split_address(address)[1]
    # Before TensorFlow's import (seconds, and its start-up log lines): a taken port is
    # the common failure, and gRPC would report it only after all of that.
    reason = port_in_use(port)
    if reason:
        raise ServeError(f"cannot serve {task} on {address}: port {port} is not free "
                         f"({reason})")
    spinning = policy.thread_spinning(policy.tasks_on_host(os.environ), os.cpu_count() or 1)
    extension = _tf_server.load_session_extension()
    if extension is None:  # a TensorFlow without the extension: through its Python API
        join, target = _serve_with_tensorflow(cluster, task, spinning)
    else:
        definition = _tf_server.server_def(
            cluster.as_dict(training_only=True), task.type, task.index,
            thread_spinning=spinning,
            intra_op_threads=policy.ps_intra_op_threads(spinning) if task.type == "ps" else 0)
        try:
            join, target = _tf_server.start_server(extension, definition)
        except _tf_server.ServerStartError as e:  # e.g. the port was taken meanwhile
            raise ServeError(f"cannot serve {task} on {address}: {e.message}") from None
    print(f"tfps.server: {task} serving on {address} (target {target})", flush=True)
    join()


def _serve_with_tensorflow(cluster: Cluster, task: TaskId, spinning: bool):
    """``(join, target)`` of a server started through `tf.distribute.Server`."""
    from tfps import _tf

    tf = _tf.require()
    config = tf.compat.v1.ConfigProto()
    config.experimental.disable_thread_spinning = not spinning
    if task.type == "ps":
        config.intra_op_parallelism_threads = policy.ps_intra_op_threads(spinning)
    try:
        server = tf.distribute.Server(
            tf.train.ClusterSpec(cluster.as_dict(training_only=True)), job_name=task.type,
            task_index=task.index, protocol="grpc", config=config, start=True)
    except tf.errors.OpError as e:  # e.g. "Could not start gRPC server": the port is taken
        raise ServeError(f"cannot serve {task} on {cluster.address(task)}: {e.message}"
                         ) from None
    return server.join, server.target


def main(argv: list[str] | None = None) -> int:
    parser = _cli.Parser(prog=_PROG, description=__doc__)
    parser.add_argument("--spec", help="cluster spec file (default: TF_CONFIG or Slurm)")
    parser.add_argument("--task", help="task to serve, e.g. worker:1 (with --spec)")
    try:
        args = parser.parse_args(argv)
        if args.spec is not None:
            if args.task is None:
                raise _cli.UsageError("--task is required with --spec")
            cluster, task = Cluster.from_file(args.spec), TaskId.parse(args.task)
        elif args.task is not None:
            raise _cli.UsageError("--task needs --spec (the cluster the task belongs to)")
        else:
            cluster, task = Cluster.from_env(), task_from_env()
        serve(cluster, task)
    except TfpsError as e:
        return _cli.exit_on_error(_PROG, e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
