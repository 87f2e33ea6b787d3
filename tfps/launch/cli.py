"""The ``tfps-launch`` command line: ``parser -> parse -> config_from_args -> run -> main``.

Everything but `run` is pure and unit-tested; `run` enters the private namespaces, checks the
ports and hands the planned tasks to the `Supervisor`. ``--emit`` and ``--doctor`` go through
the same `config_from_args` (`tfps.launch.config`), so they refuse the same bad input.

    tfps-launch --num-ps 2 --num-workers 2 examples/linear_regression.py --train_steps 400
    tfps-launch --spec cluster.yaml --task worker:1 train.py     # one task per host
    tfps-launch --from-env train.py                              # TF_CONFIG or Slurm
    tfps-launch --dry-run train.py                               # print the plan only
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from tfps import _cli, _env
from tfps.cluster import DEFAULT_NUM_PS, DEFAULT_NUM_WORKERS, split_address
from tfps.errors import ConfigError, TfpsError
from tfps.launch import config as _config
from tfps.launch.config import DoctorConfig, EmitConfig, LaunchConfig, UsageError, config_from_args
from tfps.launch.run.plan import TaskPlan, plan_tasks

__all__ = ["LaunchConfig", "UsageError", "config_from_args", "main", "parse", "parser",
           "plan", "run"]

PROG = "tfps-launch"
# Upper bounds of the numeric flags: what fits a machine (or a cluster, for --emit counts).
_MAX_COUNT = 10_000
_MAX_GPUS = 64
_MAX_RESTARTS = 10_000
_MAX_GRACE_S = 3600.0
_MAX_HANG_S = 86400.0


def parser() -> argparse.ArgumentParser:
    """The argument parser, flags grouped by topic. Every default is None, so that
    `config_from_args` can tell a flag that was given from one that was not."""
    p = _cli.Parser(prog=PROG, allow_abbrev=False,
                    usage="%(prog)s [options] SCRIPT [SCRIPT_ARGS...]",
                    description="Bring a parameter-server cluster up, supervise it, bring it "
                                "down. ps and worker tasks run the tfps task server; the chief "
                                "(and evaluator) run SCRIPT with TF_CONFIG set.")
    count = _cli.int_in(1, _MAX_COUNT)
    g = p.add_argument_group("cluster (default: all tasks on this machine)")
    g.add_argument("--num-ps", type=count, metavar="N",
                   help=f"ps tasks of the local cluster (default {DEFAULT_NUM_PS})")
    g.add_argument("--num-workers", type=count, metavar="M",
                   help=f"worker tasks of the local cluster (default {DEFAULT_NUM_WORKERS})")
    g.add_argument("--evaluator", action="store_true", default=None,
                   help="add a side-car evaluator task to the local cluster (runs SCRIPT)")
    g.add_argument("--data-workers", type=count, metavar="D",
                   help="add TF's tf.data service to the local cluster: a dispatcher and D "
                        "data workers, which run the input pipelines of tfps.data's service "
                        "mode off the workers")
    g.add_argument("--spec", metavar="FILE", help="cluster spec file (YAML or JSON)")
    g.add_argument("--task", metavar="TASK",
                   help="with --spec: run only this task here, e.g. worker:1 or chief")
    g.add_argument("--from-env", action="store_true", default=None,
                   help="run the one task that TF_CONFIG (Kubeflow) or Slurm describes")
    g = p.add_argument_group("resources")
    g.add_argument("--gpus-per-worker", type=_cli.int_in(0, _MAX_GPUS), metavar="G",
                   help="give each worker its own G GPUs (CUDA_VISIBLE_DEVICES); ps, chief "
                        "and evaluator get none (default 0: leave CUDA_VISIBLE_DEVICES alone)")
    g = p.add_argument_group("network")
    g.add_argument("--network", choices=("private", "host"),
                   help="all-local clusters run in a private network namespace (loopback "
                        "only) unless 'host' (default: private)")
    g = p.add_argument_group("output")
    g.add_argument("--log-dir", metavar="DIR",
                   help="one log file per task (default: tfps_logs/<date>-<time>-<pid>)")
    g.add_argument("--verbose", action="store_true", default=None,
                   help="keep TF's C++ INFO/WARNING logs")
    g.add_argument("--metrics-port", type=_cli.int_in(1, 65535), metavar="PORT",
                   help="serve the chief's Prometheus metrics at "
                        "http://127.0.0.1:PORT/metrics on this host (default: nothing listens)")
    g.add_argument("--dry-run", action="store_true", default=None,
                   help="print each task's TF_CONFIG, command and env as JSON; start nothing")
    g = p.add_argument_group("fault tolerance")
    g.add_argument("--max-restarts", type=_cli.int_in(0, _MAX_RESTARTS), metavar="R",
                   help=f"restart events allowed (default {_config.DEFAULT_MAX_RESTARTS}; 0: "
                        f"end the cluster on the first failure)")
    g.add_argument("--grace-period", type=_cli.seconds_in(_MAX_GRACE_S), metavar="S",
                   help="seconds between SIGTERM and SIGKILL when ending a task (default "
                        f"{_config.DEFAULT_GRACE_PERIOD:g})")
    g.add_argument("--hang-timeout", type=_cli.seconds_in(_MAX_HANG_S), metavar="S",
                   help="a task with no progress for S seconds is hung: killed and restarted "
                        "(default "
                        f"{_config.DEFAULT_HANG_TIMEOUT:g}; the chief allows slow closures "
                        "more, 10x the slowest it saw)")
    g.add_argument("--inject-fault", action="append", metavar="TASK@TIME",
                   help="SIGKILL TASK at TIME after start, e.g. worker:0@30s (repeatable)")
    from tfps.emit import cli as emit_cli
    from tfps.launch import doctor
    emit_cli.add_arguments(p)
    doctor.add_arguments(p)
    p.add_argument("script", nargs="?", metavar="SCRIPT",
                   help="the chief's program (.py runs under this Python)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="SCRIPT_ARGS",
                   help="arguments for SCRIPT")
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses `argv`; flags not given are None (`tfps.launch.config` applies the defaults)."""
    return parser().parse_args(argv)


def plan(config: LaunchConfig) -> list[TaskPlan]:
    """The tasks this launcher starts (what --dry-run prints)."""
    return plan_tasks(config.cluster, config.tasks, script=config.script,
                      script_args=config.script_args, gpus_per_worker=config.gpus_per_worker,
                      verbose=config.verbose, one_per_host=config.one_per_host)


def _check_ports(plans: Sequence[TaskPlan]) -> None:
    """Every port a task here will listen on must be free (TF binds it on all interfaces)."""
    from tfps.cluster import port_in_use

    for p in plans:
        if p.task.type == "evaluator":  # runs no server
            continue
        port = split_address(p.address)[1]
        if port_in_use(port):
            raise ConfigError(f"{p.label}: port {port} ({p.address}) is already in use on "
                              f"this host")


def _metrics_socket(config: LaunchConfig, plans: Sequence[TaskPlan]):
    """The listening socket of ``--metrics-port``, where the chief runs here; else None."""
    if config.metrics_port is None or not any(p.task.type == "chief" for p in plans):
        return None
    from tfps.launch.run import metrics_http

    try:
        return metrics_http.listen(config.metrics_port)
    except OSError as e:
        raise ConfigError(f"--metrics-port {config.metrics_port}: cannot listen on "
                          f"127.0.0.1:{config.metrics_port} ({e.strerror or e})") from None


# What `Cluster.source` says of a cluster an engine described (``--from-env``): TF_CONFIG
# (Kubeflow's TFJob, Volcano), a Slurm step, a JobSet pod (Kubeflow Trainer v2).
_ENGINE_SOURCES = ("TF_CONFIG", "Slurm", "JobSet")


def watch_peers(config: LaunchConfig) -> bool | None:
    """True when an engine described this launcher's one task: the launchers of the cluster
    then watch each other (`tfps.launch.run.peers`: a lost ps, the chief done). None leaves
    it to the supervisor, which tells TF_CONFIG and Slurm by the environment but not a JobSet
    pod, whose TF_CONFIG tfps computes (`tfps.cluster.jobset`)."""
    return True if config.one_per_host and config.cluster.source in _ENGINE_SOURCES else None


def run(config: LaunchConfig, early_signals: list | None = None) -> int:
    """Starts the planned tasks and supervises them; returns the launcher's exit code."""
    from tfps.launch.run import namespaces
    from tfps.launch.run.logs import Output, check_log_dir, default_log_dir
    from tfps.launch.run.supervisor import Supervisor

    plans = plan(config)
    metrics = _metrics_socket(config, plans)  # before the private network: the host's loopback
    reason = None
    if config.private_network:
        # Before any thread or child exists: the namespace is inherited by every task.
        reason = namespaces.enter_private_network()
        if reason:
            print(f"{PROG}: warning: {reason}; the cluster's ports are open on all "
                  f"interfaces (--network host silences this)", file=sys.stderr)
    _check_ports(plans)
    log_dir = config.log_dir or default_log_dir()
    try:
        check_log_dir(log_dir, [p.label for p in plans])  # creates nothing
        output = Output(log_dir, verbose=config.verbose)
    except OSError as e:
        where = f"{_cli.quote(e.filename)}: " if e.filename and e.filename != log_dir else ""
        raise ConfigError(f"--log-dir {_cli.quote(log_dir)}: {where}{e.strerror or e}"
                          ) from None
    # Still single-threaded (Output starts its threads per task): the PID namespace's reaper
    # is forked here. Without one, only the tasks' process groups are ended
    # (docs/launching.md, "Lifecycle").
    pids = namespaces.PidNamespace()
    pid_reason = pids.enter()
    network = ("a private network namespace (loopback only)" if config.private_network
               and not reason else "the host network")
    output.event(f"{len(plans)} task{'s' if len(plans) != 1 else ''} in {network}; "
                 f"logs in {output.log_dir}")
    if pid_reason:
        output.log_only(f"no PID namespace ({pid_reason}): a task's descendants that leave "
                        f"its process group are not ended with the cluster")
    try:
        return Supervisor(plans, output, max_restarts=config.max_restarts,
                          grace_period=config.grace_period, faults=config.faults,
                          early_signals=early_signals, hang_timeout=config.hang_timeout,
                          metrics=metrics, watch_peers=watch_peers(config)).run()
    finally:
        pids.close()


def main(argv: Sequence[str] | None = None, early_signals: list | None = None) -> int:
    """Entry point of ``tfps-launch``; returns the exit code (2 for any bad input)."""
    if early_signals is not None and _env.EARLY_SIGNALS:
        # Recorded while `import tfps` ran, before the entry point's own handlers existed.
        early_signals[:0] = _env.EARLY_SIGNALS
    try:
        config = config_from_args(parse(argv))
        if early_signals:
            name = signal.Signals(early_signals[0]).name
            print(f"{PROG}: got {name} before anything started; nothing was started",
                  file=sys.stderr, flush=True)
            return 128 + early_signals[0]
        if isinstance(config, EmitConfig):
            print(config.render(), end="")
            return 0
        if isinstance(config, DoctorConfig):
            from tfps.launch import doctor
            return doctor.run(config)
        if config.dry_run:
            for task_plan in plan(config):
                print(task_plan.to_json())
            return 0
        return run(config, early_signals)
    except TfpsError as e:
        return _cli.exit_on_error(PROG, e)


if __name__ == "__main__":
    sys.exit(main())
