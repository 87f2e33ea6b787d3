"""The tf.data service's processes: ``python -m tfps.data.service dispatcher|data_worker``.

TF's tf.data service (`tf.data.experimental.service`) runs input pipelines in processes of
their own: a *dispatcher* that hands out work, and *data workers* that run the pipelines and
send the elements to the training workers that read them. `tfps-launch --data-workers N`
starts one dispatcher and N data workers beside the cluster (roles ``dispatcher`` and
``data_worker`` in spec files); the chief finds the dispatcher in ``TFPS_DATA_SERVICE``.

    python -m tfps.data.service dispatcher --address localhost:5050
    python -m tfps.data.service data_worker --address localhost:5051 --dispatcher localhost:5050

A data worker registers with the dispatcher under its ``--address``: a data worker restarted
at the same address (what the launcher does) is the same worker to the dispatcher, and reads
that were waiting on it end (with the elements it had not sent yet lost, which tfps notices
and makes good: `tfps.data.readers`). A data worker that never comes back leaves the reads
that were waiting on it waiting: under an engine, give data workers stable addresses (a
StatefulSet, a Slurm step) so that a restart keeps the address.

``--work-dir DIR`` makes the dispatcher fault tolerant (TF journals its state there and a
restarted dispatcher recovers it); without it a restarted dispatcher starts empty and the reads
in flight fail.
"""

from __future__ import annotations

import argparse
import sys

from tfps import _cli
from tfps.cluster import port_in_use, split_address
from tfps.cluster.address import check_address
from tfps.errors import TfpsError

__all__ = ["main", "serve"]

_PROG = "tfps.data.service"
# How often a data worker reports to the dispatcher (ms). TF's default is 30 s; a short beat
# lets the dispatcher see a worker that came back at once.
_HEARTBEAT_MS = 1000
# How long the dispatcher waits for a worker's heartbeat before it drops the worker (ms).
_WORKER_TIMEOUT_MS = 10_000


class ServeError(TfpsError):
    """A tf.data service process could not start (its port is taken, a bad address)."""


def serve(role: str, address: str, dispatcher: str | None = None,
          work_dir: str | None = None) -> None:
    """Starts a dispatcher or data worker at `address` and blocks until the process ends."""
    port = split_address(address)[1]
    reason = port_in_use(port)
    if reason:
        raise ServeError(f"cannot serve {role} on {address}: port {port} is not free "
                         f"({reason})")
    import tensorflow as tf  # after the port check

    service = tf.data.experimental.service
    try:
        if role == "dispatcher":
            server = service.DispatchServer(service.DispatcherConfig(
                port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir),
                worker_timeout_ms=_WORKER_TIMEOUT_MS))
        else:
            server = service.WorkerServer(service.WorkerConfig(
                dispatcher_address=dispatcher, worker_address=address, port=port,
                heartbeat_interval_ms=_HEARTBEAT_MS))
    except (tf.errors.OpError, RuntimeError, ValueError) as e:
        raise ServeError(f"cannot serve {role} on {address}: "
                         f"{str(getattr(e, 'message', e)).splitlines()[0]}") from None
    print(f"{_PROG}: {role} serving on {address}"
          f"{f' (dispatcher {dispatcher})' if dispatcher else ''}", flush=True)
    server.join()


def main(argv: list[str] | None = None) -> int:
    parser = _cli.Parser(prog=_PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("dispatcher", "data_worker"))
    parser.add_argument("--address", required=True, help="host:port this process serves on")
    parser.add_argument("--dispatcher", help="the dispatcher's host:port (data_worker)")
    parser.add_argument("--work-dir", help="the dispatcher's journal (fault tolerance)")
    try:
        args = parser.parse_args(argv)
        check_address(args.address, "--address", None)
        if args.dispatcher is not None:
            check_address(args.dispatcher, "--dispatcher", None)
        if (args.role == "data_worker") != (args.dispatcher is not None):
            raise _cli.UsageError("--dispatcher is needed by, and only by, a data_worker")
        serve(args.role, args.address, args.dispatcher, args.work_dir)
    except TfpsError as e:
        return _cli.exit_on_error(_PROG, e)
    except argparse.ArgumentError as e:  # pragma: no cover - the parser exits itself
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
