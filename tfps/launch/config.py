"""Parsed command lines, validated into typed configs: one per mode of ``tfps-launch``.

* `LaunchConfig`: start a cluster (all-local, every task of a spec, one task of a spec, or the
  one task the environment describes) and supervise it;
* `EmitConfig`: print a manifest for an external engine
  (``--emit tfjob|volcano|trainjob|slurm``): the engine's typed spec (`tfps.emit`);
* `DoctorConfig`: run the preflight checks (``--doctor``).

Every mode accepts only the flags that mean something to it: a flag given to a mode that would
ignore it is an error (exit 2, one line), never silently dropped. `config_from_args` is pure
but for reading a spec file or the environment; nothing here starts a process.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
from collections.abc import Sequence

from tfps import _cli
from tfps._cli import UsageError  # re-exported: the launcher's error type
from tfps.cluster import (
    DEFAULT_NUM_PS,
    DEFAULT_NUM_WORKERS,
    MAX_LOCAL_TASKS,
    Cluster,
    TaskId,
    is_loopback_host,
    split_address,
    task_from_env,
)
from tfps.emit import cli as emit_cli
from tfps.emit.job import JobSpec
from tfps.errors import ClusterSpecError, ConfigError
from tfps.launch.run import scripts
from tfps.launch.run.channel import DEFAULT_HANG_TIMEOUT
from tfps.launch.run.plan import SCRIPT_ROLES, Fault, label, parse_fault

__all__ = ["DoctorConfig", "EmitConfig", "LaunchConfig", "UsageError", "config_from_args"]

# Restart events a launch allows (--max-restarts): a few lost workers or ps, not a crash loop.
DEFAULT_MAX_RESTARTS = 3
# Seconds between SIGTERM and SIGKILL when a task is ended (--grace-period): time for a
# chief to finish a checkpoint it is writing.
DEFAULT_GRACE_PERIOD = 5.0
# The shortest --hang-timeout: below it a task merely slow to answer would count as hung.
_MIN_HANG_S = 2.0

# The config of ``--emit``: the engine's typed spec (`tfps.emit.tfjob.TFJobSpec`, ...).
EmitConfig = JobSpec

# Flags (argparse dests) each mode accepts. Anything else given is refused.
_CLUSTER = {"num_ps", "num_workers", "evaluator", "spec"}
_LAUNCH = _CLUSTER | {"data_workers", "task", "from_env", "gpus_per_worker", "network", "log_dir",
                      "verbose", "dry_run", "max_restarts", "grace_period", "inject_fault",
                      "hang_timeout", "metrics_port"}
_DOCTOR = {"num_ps", "num_workers", "spec", "doctor", "model_bytes", "ps_memory"}
# How each dest is spelled on the command line, for messages.
_FLAG = {"slurm_time": "--time"}


def flag(dest: str) -> str:
    return _FLAG.get(dest, "--" + dest.replace("_", "-"))


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
    max_restarts: int = DEFAULT_MAX_RESTARTS
    grace_period: float = DEFAULT_GRACE_PERIOD
    faults: tuple[Fault, ...] = ()
    hang_timeout: float = DEFAULT_HANG_TIMEOUT  # seconds without progress: hung
    metrics_port: int | None = None  # the chief's metrics at 127.0.0.1:PORT (--metrics-port)


@dataclasses.dataclass(frozen=True)
class DoctorConfig:
    """A validated ``--doctor``: a spec to check, or counts only."""

    cluster: Cluster | None
    num_ps: int
    num_workers: int
    spec: str | None = None
    model_bytes: str | None = None
    ps_memory: str | None = None


def given(args: argparse.Namespace) -> list[str]:
    """The dests the user gave (the parser's defaults are all None)."""
    return [k for k, v in vars(args).items()
            if v is not None and k not in ("script", "script_args")]


def _refuse_others(args, allowed: set, mode: str) -> None:
    for dest in given(args):
        if dest not in allowed:
            raise UsageError(f"{flag(dest)} cannot be combined with {mode}")


def _exclusive(args, first: str, others: Sequence[str], why: str = "") -> None:
    if getattr(args, first) is not None:
        for other in others:
            if getattr(args, other) is not None:
                raise UsageError(f"{flag(other)} cannot be combined with {flag(first)}{why}")


def config_from_args(args: argparse.Namespace):
    """Validates `args` into a `LaunchConfig`, `EmitConfig` or `DoctorConfig`.

    Raises:
      TfpsError: naming the flag (or spec field) and the value; the CLI exits 2.
    """
    if args.emit is not None and args.doctor is not None:
        raise UsageError("--doctor cannot be combined with --emit")
    _exclusive(args, "spec", ("num_ps", "num_workers", "evaluator", "data_workers"),
               " (the spec lists the tasks)")
    if args.emit is not None:
        _refuse_others(args, _CLUSTER | {"data_workers"} | emit_cli.flags(args.emit),
                       f"--emit {args.emit}")
        return _emit_config(args)
    if args.doctor is not None:
        _refuse_others(args, _DOCTOR, "--doctor")
        return _doctor_config(args)
    _refuse_others(args, _LAUNCH, "a launch")
    return _launch_config(args)


def _script(args, needed_by: str) -> str:
    if args.script is None:
        raise UsageError(f"missing SCRIPT (the program {needed_by})")
    return args.script


def _load_spec(path: str, need_chief: bool, what: str) -> Cluster:
    cluster = Cluster.from_file(path)
    if need_chief and not cluster.chief:
        raise ClusterSpecError(f"chief: {what} needs a chief task (it runs SCRIPT, and the "
                               f"cluster ends when it does), got 0", path)
    return cluster


def _counts(args) -> tuple[int, int, bool]:
    return (DEFAULT_NUM_PS if args.num_ps is None else args.num_ps,
            DEFAULT_NUM_WORKERS if args.num_workers is None else args.num_workers,
            bool(args.evaluator))


def _emit_config(args) -> EmitConfig:
    script = _script(args, f"every task of the --emit {args.emit} job runs")
    if args.spec is not None:
        cluster = _load_spec(args.spec, True, "--emit")
        num_ps, num_workers, evaluator = cluster.num_ps, cluster.num_workers, \
            bool(cluster.evaluator)
        data_workers = len(cluster.data_worker)
    else:
        num_ps, num_workers, evaluator = _counts(args)
        data_workers = args.data_workers or 0
    return emit_cli.spec_from_args(args, script=script, num_ps=num_ps,
                                   num_workers=num_workers, evaluator=evaluator,
                                   data_workers=data_workers)


def _doctor_config(args) -> DoctorConfig:
    if args.script is not None:
        raise UsageError(f"--doctor takes no SCRIPT (got {_cli.quote(args.script)})")
    if args.spec is not None:
        cluster = Cluster.from_file(args.spec)
        return DoctorConfig(cluster, cluster.num_ps, cluster.num_workers, spec=args.spec,
                            model_bytes=args.model_bytes, ps_memory=args.ps_memory)
    num_ps, num_workers, _ = _counts(args)
    return DoctorConfig(None, num_ps, num_workers, model_bytes=args.model_bytes,
                        ps_memory=args.ps_memory)


def _check_hosts_are_here(cluster: Cluster) -> None:
    """Every task of the cluster runs on this machine: each host must be one of its names.

    A host that is elsewhere (or nowhere) would be served here, on all interfaces, while the
    chief dials the other machine: a cluster that can never form. Resolution runs in this
    thread (no thread may outlive it: the PID namespace is entered later, single-threaded).
    """
    verdicts: dict[str, str | None] = {}
    ports: dict[str, str] = {}
    for task, address in cluster.tasks():
        host, port = split_address(address)
        field = f"{task.type}[{task.index}]"
        if host not in verdicts:
            verdicts[host] = _not_this_host(host)
        if verdicts[host]:
            raise ClusterSpecError(
                f"{field}: host {_cli.quote(host)} {verdicts[host]}, but every task of the "
                f"spec runs here (use --task to run one task per host)", cluster.source)
        # TF binds 0.0.0.0:PORT whatever the host: two names of this machine, one port.
        if port in ports and task.type != "evaluator":
            raise ClusterSpecError(
                f"{field}: port {port} is already used by {ports[port]} (both run here, and "
                f"a task server listens on all interfaces)", cluster.source)
        if task.type != "evaluator":
            ports[port] = field


def _not_this_host(host: str) -> str | None:
    """None if `host` names this machine (loopback, or an address a socket can bind)."""
    if is_loopback_host(host):
        return None
    try:
        ips = {info[4][0] for info in socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)}
    except (OSError, UnicodeError, ValueError) as e:
        return f"does not resolve ({e.strerror if isinstance(e, OSError) else e})"
    for ip in sorted(ips):
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((ip, 0))
            return None
        except OSError:
            continue
    return f"is not this machine (it resolves to {', '.join(sorted(ips))[:60]})"


def _launch_config(args) -> LaunchConfig:
    script = _script(args, "the chief runs")
    if args.from_env:
        _exclusive(args, "from_env", ("spec", "task", "num_ps", "num_workers", "evaluator",
                                      "data_workers", "network"),
                   " (the environment names the task)")
        cluster = Cluster.from_env()
        tasks = (task_from_env(),)
    elif args.spec is not None:
        if args.task is not None:
            _exclusive(args, "task", ("network",), " (one task per host uses the host network)")
            cluster = Cluster.from_file(args.spec)
            try:
                tasks = (cluster.check_task(TaskId.parse(args.task)),)
            except ConfigError as e:
                raise ClusterSpecError(str(e), args.spec) from None
        else:
            cluster = _load_spec(args.spec, True, "a launch of every task")
            tasks = tuple(t for t, _ in cluster.tasks())
    else:
        if args.task is not None:
            raise UsageError("--task needs --spec (the cluster the task belongs to)")
        num_ps, num_workers, evaluator = _counts(args)
        for dest, value in (("num_ps", num_ps), ("num_workers", num_workers)):
            if value > MAX_LOCAL_TASKS:
                raise UsageError(f"{flag(dest)} {value}: a cluster on this machine runs at most "
                                 f"{MAX_LOCAL_TASKS} (each task is a TensorFlow process)")
        cluster = Cluster.local(num_ps=num_ps, num_workers=num_workers, evaluator=evaluator,
                                data_workers=args.data_workers or 0)
        tasks = tuple(t for t, _ in cluster.tasks())
    if any(t.type in SCRIPT_ROLES for t in tasks):
        scripts.check_runnable(script)
    one_per_host = bool(args.from_env or args.task is not None)
    # One task per host must be reachable from the other hosts: always the host network.
    private = (args.network or "private") == "private" and not one_per_host
    if private:
        for task, address in cluster.tasks():
            host = split_address(address)[0]
            if not is_loopback_host(host):
                raise ClusterSpecError(
                    f"{task.type}[{task.index}]: host {_cli.quote(host)} is not a loopback "
                    f"address, but a private network namespace only has loopback (use "
                    f"--network host, or --task to run one task per host)", cluster.source)
    elif not one_per_host:
        _check_hosts_are_here(cluster)
    if args.log_dir is not None and not args.log_dir.strip():
        raise UsageError(f"--log-dir {_cli.quote(args.log_dir)}: not a directory name")
    if args.hang_timeout is not None and args.hang_timeout < _MIN_HANG_S:
        raise UsageError(f"--hang-timeout {args.hang_timeout:g}: at least {_MIN_HANG_S:g} "
                         f"seconds (a live task answers within milliseconds, but a loaded one "
                         f"may take a second)")
    faults = tuple(parse_fault(text) for text in args.inject_fault or ())
    for fault in faults:
        if fault.task not in tasks:
            raise ConfigError(f"--inject-fault {fault}: {label(fault.task)} does not run "
                              f"here (this launcher runs {', '.join(map(label, tasks))})")
    return LaunchConfig(
        cluster=cluster, tasks=tasks, script=script, script_args=tuple(args.script_args),
        one_per_host=one_per_host, gpus_per_worker=args.gpus_per_worker or 0,
        private_network=private, log_dir=args.log_dir, verbose=bool(args.verbose),
        dry_run=bool(args.dry_run),
        max_restarts=DEFAULT_MAX_RESTARTS if args.max_restarts is None else args.max_restarts,
        grace_period=DEFAULT_GRACE_PERIOD if args.grace_period is None else args.grace_period,
        faults=faults,
        hang_timeout=DEFAULT_HANG_TIMEOUT if args.hang_timeout is None else args.hang_timeout,
        metrics_port=args.metrics_port)

