"""The ``tfps-launch`` command line: ``parser -> parse -> config_from_args -> run -> main``.

Everything but `run` is pure and unit-tested; `run` enters the private network namespace, checks
the ports and hands the planned tasks to the `Supervisor`.

    tfps-launch --num-ps 2 --num-workers 2 examples/linear_regression.py --train_steps 400
    tfps-launch --spec cluster.yaml --task worker:1 train.py     # one task per host
    tfps-launch --from-env train.py                              # TF_CONFIG or Slurm
    tfps-launch --dry-run train.py                               # print the plan only
"""

from __future__ import annotations

import argparse
import math
import dataclasses
import errno
import os
import socket
import sys
from typing import Sequence

from tfps.cluster import Cluster, TaskId, task_from_env
from tfps.errors import ConfigError, TfpsError
from tfps.launch import doctor, emit, netns
from tfps.launch.logs import Output, default_log_dir
from tfps.launch.plan import SCRIPT_ROLES, Fault, TaskPlan, label, parse_fault, plan_tasks
from tfps.launch.supervisor import Supervisor

__all__ = ["LaunchConfig", "config_from_args", "main", "parse", "parser", "plan", "run"]

PROG = "tfps-launch"
# Defaults of the all-local cluster (also what --emit/--doctor see when not given).
_DEFAULT_NUM_PS = 2
_DEFAULT_NUM_WORKERS = 2


class UsageError(TfpsError):
    """Bad command line: printed as ``tfps-launch: error: ...``, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage too: keep errors to one line
        raise UsageError(message)


def _int_at_least(low: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return convert


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:  # also refuses nan and inf (the end would never come)
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    """The argument parser, flags grouped by topic."""
    p = _Parser(prog=PROG, allow_abbrev=False,
                usage="%(prog)s [options] SCRIPT [SCRIPT_ARGS...]",
                description="Bring a parameter-server cluster up, supervise it, bring it down. "
                            "ps and worker tasks run the tfps task server; the chief (and "
                            "evaluator) run SCRIPT with TF_CONFIG set.")
    g = p.add_argument_group("cluster (default: all tasks on this machine)")
    g.add_argument("--num-ps", type=_int_at_least(1), metavar="N",
                   help=f"ps tasks of the local cluster (default {_DEFAULT_NUM_PS})")
    g.add_argument("--num-workers", type=_int_at_least(1), metavar="M",
                   help=f"worker tasks of the local cluster (default {_DEFAULT_NUM_WORKERS})")
    g.add_argument("--evaluator", action="store_true",
                   help="add a side-car evaluator task to the local cluster (runs SCRIPT)")
    g.add_argument("--spec", metavar="FILE", help="cluster spec file (YAML or JSON)")
    g.add_argument("--task", metavar="TASK",
                   help="with --spec: run only this task here, e.g. worker:1 or chief")
    g.add_argument("--from-env", action="store_true",
                   help="run the one task that TF_CONFIG (Kubeflow) or Slurm describes")
    g = p.add_argument_group("resources")
    g.add_argument("--gpus-per-worker", type=_int_at_least(0), default=0, metavar="G",
                   help="give each worker its own G GPUs (CUDA_VISIBLE_DEVICES); ps, chief "
                        "and evaluator get none (default 0: leave CUDA_VISIBLE_DEVICES alone)")
    g = p.add_argument_group("network")
    g.add_argument("--network", choices=("private", "host"), default="private",
                   help="all-local clusters run in a private network namespace (loopback "
                        "only) unless 'host' (default: private)")
    g = p.add_argument_group("output")
    g.add_argument("--log-dir", metavar="DIR",
                   help="one log file per task (default: tfps_logs/<date>-<time>-<pid>)")
    g.add_argument("--verbose", action="store_true", help="keep TF's C++ INFO/WARNING logs")
    g.add_argument("--dry-run", action="store_true",
                   help="print each task's TF_CONFIG, command and env as JSON; start nothing")
    g = p.add_argument_group("fault tolerance")
    g.add_argument("--max-restarts", type=_int_at_least(0), default=3, metavar="R",
                   help="restart events allowed (default 3; 0: end the cluster on the "
                        "first failure)")
    g.add_argument("--grace-period", type=_positive_float, default=5.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL when ending a task (default 5)")
    g.add_argument("--inject-fault", action="append", default=[], metavar="TASK@TIME",
                   help="SIGKILL TASK at TIME after start, e.g. worker:0@30s (repeatable)")
    emit.add_arguments(p)
    doctor.add_arguments(p)
    p.add_argument("script", nargs="?", metavar="SCRIPT",
                   help="the chief's program (.py runs under this Python)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="SCRIPT_ARGS",
                   help="arguments for SCRIPT")
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses `argv`; counts not given get their defaults (``num_ps_given`` tells which)."""
    args = parser().parse_args(argv)
    args.num_ps_given = args.num_ps is not None
    args.num_workers_given = args.num_workers is not None
    if args.num_ps is None:
        args.num_ps = _DEFAULT_NUM_PS
    if args.num_workers is None:
        args.num_workers = _DEFAULT_NUM_WORKERS
    return args


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """A validated launch: the cluster, which of its tasks run here, and how."""

    cluster: Cluster
    tasks: tuple[TaskId, ...]  # the tasks this launcher runs
    script: str
    script_args: tuple[str, ...] = ()
    one_per_host: bool = False  # --task / --from-env: this launcher runs one task
    gpus_per_worker: int = 0
    private_network: bool = True
    log_dir: str | None = None
    verbose: bool = False
    dry_run: bool = False
    max_restarts: int = 3
    grace_period: float = 5.0
    faults: tuple[Fault, ...] = ()


def _conflicts(args, mode: str, names: Sequence[str]) -> None:
    given = {"--num-ps": args.num_ps_given, "--num-workers": args.num_workers_given,
             "--evaluator": args.evaluator, "--spec": bool(args.spec),
             "--task": bool(args.task)}
    for name in names:
        if given[name]:
            raise UsageError(f"{name} cannot be combined with {mode}")


def config_from_args(args: argparse.Namespace) -> LaunchConfig:
    """Validates `args` into a `LaunchConfig`; raises `TfpsError` (exit 2) naming the problem."""
    if not args.script:
        raise UsageError("missing SCRIPT (the program the chief runs)")
    if args.from_env:
        _conflicts(args, "--from-env",
                   ("--spec", "--task", "--num-ps", "--num-workers", "--evaluator"))
        cluster = Cluster.from_env()
        tasks = (task_from_env(),)
    elif args.spec:
        _conflicts(args, "--spec (the spec lists the tasks)",
                   ("--num-ps", "--num-workers", "--evaluator"))
        cluster = Cluster.from_file(args.spec)
        if args.task:
            task = TaskId.parse(args.task)
            try:
                cluster.address(task)
            except ConfigError as e:
                raise ConfigError(f"cluster spec {args.spec}: {e}") from None
            tasks = (task,)
        else:
            tasks = tuple(t for t, _ in cluster.tasks())
    else:
        if args.task:
            raise UsageError("--task needs --spec (the cluster the task belongs to)")
        cluster = Cluster.local(num_ps=args.num_ps, num_workers=args.num_workers,
                                evaluator=args.evaluator)
        tasks = tuple(t for t, _ in cluster.tasks())
    if any(t.type in SCRIPT_ROLES for t in tasks):
        _check_script(args.script)
    one_per_host = bool(args.from_env or args.task)
    # One task per host must be reachable from the other hosts: always the host network.
    private = args.network == "private" and not one_per_host
    if private:
        for task, address in cluster.tasks():
            host = address.rpartition(":")[0]
            if not netns.is_loopback_host(host):
                raise ConfigError(
                    f"cluster spec {cluster.source}: {task.type}[{task.index}]: host {host!r} "
                    f"is not a loopback address, but a private network namespace only has "
                    f"loopback (use --network host, or --task to run one task per host)")
    faults = tuple(parse_fault(text) for text in args.inject_fault)
    for fault in faults:
        if fault.task not in tasks:
            raise ConfigError(f"--inject-fault {fault}: {label(fault.task)} does not run "
                              f"here (this launcher runs {', '.join(map(label, tasks))})")
    return LaunchConfig(
        cluster=cluster, tasks=tasks, script=args.script,
        script_args=tuple(args.script_args), one_per_host=one_per_host,
        gpus_per_worker=args.gpus_per_worker, private_network=private,
        log_dir=args.log_dir, verbose=args.verbose, dry_run=args.dry_run,
        max_restarts=args.max_restarts, grace_period=args.grace_period, faults=faults)


def _check_script(script: str) -> None:
    if not os.path.isfile(script):
        raise UsageError(f"script {script!r}: no such file")
    if not script.endswith(".py") and not os.access(script, os.X_OK):
        raise UsageError(f"script {script!r}: not executable (only .py files run under "
                         f"Python)")


def plan(config: LaunchConfig) -> list[TaskPlan]:
    """The tasks this launcher starts (what --dry-run prints)."""
    return plan_tasks(config.cluster, config.tasks, script=config.script,
                      script_args=config.script_args, gpus_per_worker=config.gpus_per_worker,
                      verbose=config.verbose, one_per_host=config.one_per_host)


def _check_ports(plans: Sequence[TaskPlan]) -> None:
    """Every port a task here will listen on must be free (TF binds it on all interfaces)."""
    for p in plans:
        if p.task.type == "evaluator":  # runs no server
            continue
        port = int(p.address.rpartition(":")[2])
        for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            try:
                s = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                continue  # no IPv6 here
            with s:
                # REUSEADDR: a port in TIME_WAIT (a task just restarted) is not "in use".
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    s.bind((host, port))
                except OSError as e:
                    if family == socket.AF_INET6 and e.errno != errno.EADDRINUSE:
                        continue  # IPv6 disabled: nothing can listen there either
                    raise ConfigError(f"{p.label}: port {port} ({p.address}) is already in "
                                      f"use on this host") from None


def run(config: LaunchConfig) -> int:
    """Starts the planned tasks and supervises them; returns the launcher's exit code."""
    plans = plan(config)
    reason = None
    if config.private_network:
        # Before any thread or child exists: the namespace is inherited by every task.
        reason = netns.enter_private_network()
        if reason:
            print(f"{PROG}: warning: {reason}; the cluster's ports are open on all "
                  f"interfaces (--network host silences this)", file=sys.stderr)
    _check_ports(plans)
    log_dir = config.log_dir or default_log_dir()
    try:
        output = Output(log_dir, verbose=config.verbose)
    except OSError as e:
        raise ConfigError(f"--log-dir {log_dir}: {e.strerror or e}") from None
    network = ("a private network namespace (loopback only)" if config.private_network
               and not reason else "the host network")
    output.event(f"{len(plans)} task{'s' if len(plans) != 1 else ''} in {network}; "
                 f"logs in {output.log_dir}")
    return Supervisor(plans, output, max_restarts=config.max_restarts,
                      grace_period=config.grace_period, faults=config.faults).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tfps-launch``; returns the exit code."""
    try:
        args = parse(argv)
        if getattr(args, "emit", None):
            return emit.run(args)
        if getattr(args, "doctor", False):
            return doctor.run(args)
        config = config_from_args(args)
        if config.dry_run:
            for task_plan in plan(config):
                print(task_plan.to_json())
            return 0
        return run(config)
    except TfpsError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
