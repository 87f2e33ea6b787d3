"""`tfps-launch --doctor`: preflight checks before a long job.

Checks what can be checked from one host, before hours are spent waiting on a job that cannot
work: TensorFlow and tf-keras minor versions match; every address of the spec resolves; the
ports of the tasks that would run on this host are free (TF binds them on all interfaces) and
not shared; the ps tasks can hold the model (``--model-bytes``). Then it prints
recommendations: number of ps, shard size, steps per closure.

Exit status: 0 when no check fails (warnings and skipped checks do not fail), 1 otherwise, with
the failures listed last.

The checks are pure functions returning `Check` records, so they are testable without the CLI:

>>> from tfps import Cluster
>>> c = Cluster.from_dict({"chief": ["localhost:1"], "ps": ["localhost:2"],
...                        "worker": ["no-such-host.invalid:3"]})
>>> [ch.status for ch in check_addresses(c)]
['FAIL']
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.metadata
import math
import os
import socket
from collections.abc import Iterable, Sequence

from tfps import policy
from tfps._units import human_bytes, parse_bytes
from tfps.cluster import Cluster, port_in_use, split_address
from tfps.launch.config import DoctorConfig
from tfps.policy import DEFAULT_MIN_SHARD_BYTES

__all__ = ["Check", "add_arguments", "check_addresses", "check_ports", "check_ps_capacity",
           "check_versions", "checks", "format_report", "recommendations", "run"]

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
# getaddrinfo cannot be cancelled; past this a host counts as not resolving.
_RESOLVE_TIMEOUT_S = 10.0
# A ps needs room beyond its variables: checkpoint saves serialize a copy of each shard and
# gRPC buffers the values in flight. Half its memory for variables leaves that room.
_PS_MEMORY_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class Check:
    """One preflight result: `status` is ``ok``, ``warn``, ``FAIL`` or ``skip``."""

    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 and noun == 'worker' else ''}"


def host_memory_bytes() -> int | None:
    """Physical memory of this host, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# ------------------------------------------------------------------------------ checks
def check_versions() -> Check:
    """TensorFlow and tf-keras must share a minor version (tf.keras is tf_keras under PSS);
    the rule and its message are `tfps._env.check_versions`'s, which `import tfps` applies."""
    from tfps import _env

    try:
        _env.check_versions()
    except ImportError as e:
        return Check("versions", FAIL, str(e))
    try:
        found = (f"tensorflow {importlib.metadata.version('tensorflow')}, "
                 f"tf-keras {importlib.metadata.version('tf-keras')}")
    except importlib.metadata.PackageNotFoundError:
        return Check("versions", WARN, "the 'tensorflow' distribution is not installed under "
                     "that name (tensorflow-cpu, tf-nightly?): versions not compared")
    return Check("versions", OK, found)


def _resolve_all(hosts: Iterable[str], timeout: float) -> dict[str, list[str] | str]:
    """host -> its IP addresses, or the reason it does not resolve."""
    hosts = sorted(set(hosts))
    results: dict[str, list[str] | str] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(hosts) or 1))
    futures = {h: pool.submit(socket.getaddrinfo, h, None, 0, socket.SOCK_STREAM)
               for h in hosts}
    for host, future in futures.items():
        try:
            infos = future.result(timeout=timeout)
            results[host] = sorted({info[4][0] for info in infos})
        except concurrent.futures.TimeoutError:
            results[host] = f"no answer within {timeout:.0f} s"
        except OSError as e:
            results[host] = e.strerror or str(e)
    pool.shutdown(wait=False, cancel_futures=True)
    return results


def check_addresses(cluster: Cluster, timeout: float = _RESOLVE_TIMEOUT_S,
                    resolved: dict | None = None) -> list[Check]:
    """Every host of the spec must resolve: a task whose host does not is never reached."""
    resolved = resolved if resolved is not None else _resolve_all(
        (split_address(a)[0] for _, a in cluster.tasks()), timeout)
    bad = [f"{task} {address} ({resolved[split_address(address)[0]]})"
           for task, address in cluster.tasks()
           if isinstance(resolved[split_address(address)[0]], str)]
    hosts = len(resolved)
    if bad:
        return [Check("addresses", FAIL, f"{len(bad)} of {len(list(cluster.tasks()))} task "
                      f"addresses do not resolve: " + "; ".join(bad))]
    return [Check("addresses", OK, "the host resolves" if hosts == 1
                  else f"all {hosts} hosts resolve")]


def _is_local(ip: str) -> bool:
    """True when `ip` belongs to this host: only then can a socket bind to it."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def check_ports(cluster: Cluster, timeout: float = _RESOLVE_TIMEOUT_S,
                resolved: dict | None = None) -> list[Check]:
    """Ports of the tasks on this host must be free, and no two of them may share one.

    TF's gRPC server listens on ``0.0.0.0:PORT`` whatever host the spec names, so two tasks on
    one host with the same port collide even under different host names.
    """
    resolved = resolved if resolved is not None else _resolve_all(
        (split_address(a)[0] for _, a in cluster.tasks()), timeout)
    local = []
    for task, address in cluster.tasks():
        host, port = split_address(address)
        ips = resolved.get(host)
        if isinstance(ips, list) and any(_is_local(ip) for ip in ips):
            local.append((task, address, port))
    if not local:
        return [Check("ports", SKIP, f"no task of the spec runs on this host "
                      f"({socket.gethostname()})")]
    problems, by_port = [], {}
    for task, address, port in local:
        if port in by_port:
            problems.append(f"{task} {address} and {by_port[port]} both need port {port} on "
                            f"this host")
            continue
        by_port[port] = f"{task} {address}"
        if task.type == "evaluator":
            continue  # runs no server
        reason = port_in_use(port)
        if reason:
            problems.append(f"{task} {address}: port {port} is not free ({reason})")
    if problems:
        return [Check("ports", FAIL, "; ".join(problems))]
    return [Check("ports", OK, f"{len(local)} task port{'s' if len(local) != 1 else ''} of this "
                  f"host free: " + ", ".join(str(p) for _, _, p in local))]


def check_ps_capacity(num_ps: int, model_bytes: int | None,
                      ps_memory_bytes: int | None) -> list[Check]:
    """The ps tasks together must hold the model with room to spare."""
    if model_bytes is None:
        return [Check("ps capacity", SKIP, "pass --model-bytes (variables and optimizer "
                      "slots) to check the ps count against the model")]
    share = model_bytes / num_ps
    out = []
    if ps_memory_bytes is not None:
        budget = ps_memory_bytes * _PS_MEMORY_FRACTION
        if share > budget:
            need = math.ceil(model_bytes / budget)
            out.append(Check(
                "ps capacity", FAIL,
                f"{human_bytes(model_bytes)} over {num_ps} ps is {human_bytes(share)} per ps, "
                f"more than half of a ps host's {human_bytes(ps_memory_bytes)}: use at least "
                f"{need} ps (or pass --ps-memory if the ps hosts have more)"))
            return out
        out.append(Check("ps capacity", OK,
                         f"{human_bytes(share)} per ps of {human_bytes(ps_memory_bytes)} "
                         f"({num_ps} ps, model {human_bytes(model_bytes)})"))
    useful = max(1, math.ceil(model_bytes / DEFAULT_MIN_SHARD_BYTES))
    if num_ps > useful:
        out.append(Check(
            "ps count", WARN,
            f"{num_ps} ps for {human_bytes(model_bytes)}: each would hold less than the "
            f"{human_bytes(DEFAULT_MIN_SHARD_BYTES)} minimum shard, so ps beyond {useful} add "
            f"RPCs without spreading load"))
    return out


def recommendations(*, num_ps: int, num_workers: int, model_bytes: int | None,
                    ps_memory_bytes: int | None) -> list[str]:
    """Number of ps, shard size and steps per closure for this model and cluster."""
    out = []
    if model_bytes is None:
        out.append("number of ps: pass --model-bytes for a recommendation")
    else:
        by_memory = (math.ceil(model_bytes / (ps_memory_bytes * _PS_MEMORY_FRACTION))
                     if ps_memory_bytes else 1)
        useful = max(1, math.ceil(model_bytes / DEFAULT_MIN_SHARD_BYTES))
        # Keep the ps count given unless memory needs more or the shards would get too small.
        best = max(by_memory, min(num_ps, useful))
        out.append(f"number of ps: {best} (model {human_bytes(model_bytes)}; at least "
                   f"{by_memory} for memory, at most {useful} before a ps holds less than "
                   f"{human_bytes(DEFAULT_MIN_SHARD_BYTES)})")
        out.append(f"shard size: keep min_shard_bytes={DEFAULT_MIN_SHARD_BYTES} (256 KiB, "
                   f"tfps.make_strategy's default); a variable of V bytes is split into "
                   f"min({best}, V / 256 KiB) shards, about {human_bytes(model_bytes / best)} "
                   f"per ps for this model")
    out.append(f"steps per closure: leave tfps.Trainer to measure it at start (the smallest "
               f"count with scheduling under {policy.PACKING_OVERHEAD:.0%} of a closure, "
               f"closures under ~{policy.MAX_CLOSURE_SECONDS:g} s); for Keras fit use "
               f"steps_per_execution=tfps.keras.steps_per_execution(steps_per_epoch, "
               f"{num_workers or 1}) (e.g. "
               f"{policy.steps_per_execution(1000, max(num_workers, 1))} for 1000 steps/epoch)")
    if num_workers and num_ps > num_workers:
        out.append(f"workers: {_n(num_workers, 'worker')} for {num_ps} ps; ps only serve, so "
                   f"more workers than ps is usual")
    return out


def checks(cluster: Cluster | None = None, *, num_ps: int | None = None,
           model_bytes: int | None = None, ps_memory_bytes: int | None = None,
           timeout: float = _RESOLVE_TIMEOUT_S) -> list[Check]:
    """Every preflight check, in order. Without a cluster, only versions and ps capacity."""
    out = [check_versions()]
    if cluster is not None:
        resolved = _resolve_all((split_address(a)[0] for _, a in cluster.tasks()), timeout)
        out += check_addresses(cluster, resolved=resolved)
        out += check_ports(cluster, resolved=resolved)
        num_ps = cluster.num_ps
    out += check_ps_capacity(num_ps or 1, model_bytes, ps_memory_bytes)
    return out


def format_report(results: Sequence[Check], recs: Sequence[str], title: str) -> str:
    lines = [f"tfps doctor: {title}"]
    width = max(len(c.name) for c in results)
    lines += [f"  [{c.status:<4}] {c.name:<{width}}  {c.detail}" for c in results]
    lines.append("recommendations:")
    lines += [f"  - {r}" for r in recs]
    failed = [c for c in results if c.failed]
    if failed:
        lines.append(f"{len(failed)} check{'s' if len(failed) != 1 else ''} failed:")
        lines += [f"  - {c.name}: {c.detail}" for c in failed]
    else:
        lines.append("all checks passed")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ CLI
def add_arguments(parser) -> None:
    group = parser.add_argument_group("preflight")
    group.add_argument("--doctor", action="store_true", default=None,
                       help="check versions, the spec's addresses and ports, and the ps count "
                            "against --model-bytes; print recommendations and exit (1 if a "
                            "check fails)")
    group.add_argument("--model-bytes", metavar="SIZE",
                       help="doctor: bytes of all variables and optimizer slots, e.g. 6GB")
    group.add_argument("--ps-memory", metavar="SIZE",
                       help="doctor: memory of one ps host (default: this host's)")


def run(config: DoctorConfig) -> int:
    """Runs every check and prints the report; 0 if none failed, 1 otherwise."""
    model_bytes = parse_bytes(config.model_bytes) if config.model_bytes is not None else None
    ps_memory = (parse_bytes(config.ps_memory, "--ps-memory") if config.ps_memory is not None
                 else host_memory_bytes())
    cluster = config.cluster
    if cluster is not None:
        title = (f"cluster spec {config.spec} (" + ", ".join(
            _n(len(getattr(cluster, r)), r) for r in ("chief", "ps", "worker", "evaluator")
            if getattr(cluster, r)) + ")")
    else:
        title = (f"{config.num_ps} ps, {_n(config.num_workers, 'worker')} (no --spec: "
                 f"addresses not checked)")
    results = checks(cluster, num_ps=config.num_ps, model_bytes=model_bytes,
                     ps_memory_bytes=ps_memory)
    recs = recommendations(num_ps=config.num_ps, num_workers=config.num_workers,
                           model_bytes=model_bytes, ps_memory_bytes=ps_memory)
    print(format_report(results, recs, title), end="")
    return 1 if any(c.failed for c in results) else 0
