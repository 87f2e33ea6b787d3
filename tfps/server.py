"""The task server: what a ps or worker task runs. No user code runs there.

``python -m tfps.server`` serves the task that ``TF_CONFIG`` (or Slurm) describes, or the one
named by ``--spec FILE --task worker:1``. It blocks until the process is killed; the
coordinator sends it work.
"""

from __future__ import annotations

import sys

from tfps import _cli, _env
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
    from tfps import _tf  # after the checks: bad input costs no TF import

    tf = _tf.require()
    spec = tf.train.ClusterSpec(cluster.as_dict(training_only=True))
    try:
        server = tf.distribute.Server(spec, job_name=task.type, task_index=task.index,
                                      protocol="grpc", start=True)
    except tf.errors.OpError as e:  # e.g. "Could not start gRPC server": the port is taken
        raise ServeError(f"cannot serve {task} on {cluster.address(task)}: {e.message}"
                         ) from None
    print(f"tfps.server: {task} serving on {cluster.address(task)} "
          f"(target {server.target})", flush=True)
    server.join()


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
