"""The benchmark harness: processes, clusters, programs and their ``bench:`` lines, pairs.

Every process is started in its own session and ended by process group (also on errors and
Ctrl-C); every wait has a timeout. Nothing here imports TensorFlow or tfps: the traffic counts
run in a subprocess of their own (``python -m tfps.train.traffic``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable
TASK_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_FAIL_FAST": "use_caller",
            "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1"}
# Longest a single chief may run before it is killed and the row marked failed.
CHIEF_TIMEOUT = 600
# Longest a ps/worker server may take to print its "serving" line.
_SERVER_TIMEOUT = 120
_BENCH_LINE = re.compile(r"^bench: (.*)$", re.M)


# ------------------------------------------------------------------------------ sizes
@dataclasses.dataclass(frozen=True)
class Size:
    """How long each row runs: repetitions per side and steps per timed window."""

    reps: int
    windows: int              # timed windows inside each chief (its median is reported)
    k_recsys: int             # steps per timed window, recsys model, 10 steps/closure
    k_linear_default: int     # steps per window, linear model, Trainer default / 1-per-schedule
    k_local: int              # steps per window, ps_vs_local (recsys)
    k_accum: int              # steps (micro-batches) per window, accumulation_vs_local
    fit_epochs: int
    fit_steps: int            # steps per epoch
    launch_reps: int
    warmup: int               # warm-up steps (recsys rows); linear rows use 5x
    auc_chunk: int            # time_to_auc: training steps between (untimed) evaluations
    auc_max_steps: int        # time_to_auc: give up after this many steps
    quality_steps: int        # quality_guard: steps (equal examples) of every mode
    quality_workers: tuple    # quality_guard: the worker counts it checks


SIZES = {
    "tiny": Size(reps=1, windows=1, k_recsys=30, k_linear_default=200, k_local=100,
                 k_accum=640, fit_epochs=2, fit_steps=20, launch_reps=1, warmup=10,
                 auc_chunk=100, auc_max_steps=200, quality_steps=200, quality_workers=(2,)),
    # Start-up (six TF imports per row, tracing) is ~30 s a row on 2 cores (the tiny run):
    # quick adds ~10 s of steady-state measurement per row.
    "quick": Size(reps=1, windows=2, k_recsys=60, k_linear_default=600, k_local=200,
                  k_accum=1280, fit_epochs=2, fit_steps=40, launch_reps=1, warmup=20,
                  auc_chunk=1000, auc_max_steps=8000, quality_steps=4000,
                  quality_workers=(2,)),
    "full": Size(reps=3, windows=3, k_recsys=400, k_linear_default=4000, k_local=500,
                 k_accum=6400, fit_epochs=4, fit_steps=200, launch_reps=3, warmup=100,
                 auc_chunk=1000, auc_max_steps=10_000, quality_steps=4000,
                 quality_workers=(2, 4)),
}


# ------------------------------------------------------------------------------ processes
def task_env(tf_config: dict | None = None) -> dict:
    env = dict(os.environ, **TASK_ENV)
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Ends `proc` and its whole process group: SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # stragglers of a leader that already exited
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(1)
    except subprocess.TimeoutExpired:
        pass


class BenchError(RuntimeError):
    pass


class Processes:
    """Every process the harness starts; `close` ends them all by process group."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self, argv, log_name=None, **kwargs) -> subprocess.Popen:
        if log_name:
            kwargs["stdout"] = open(os.path.join(self.workdir, log_name), "w")
            kwargs["stderr"] = subprocess.STDOUT
        proc = subprocess.Popen(argv, cwd=REPO, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def close(self):
        for proc in reversed(self.procs):
            kill_group(proc)
        self.procs.clear()


class Cluster:
    """ps and worker servers (``python -m tfps.server``) on free ports, up until `close`."""

    def __init__(self, procs: Processes, num_ps: int, num_workers: int, tag: str):
        from tfps.cluster import Cluster as _Cluster  # pure Python: no TF import here

        self.spec = _Cluster.local(num_ps=num_ps, num_workers=num_workers)
        self.procs = Processes(procs.workdir)
        self.logs = []
        self.pids: dict[str, int] = {}  # "ps0" -> pid: the chief measures their CPU
        tasks = num_ps + num_workers + 1
        for task, _ in self.spec.tasks():
            if task.type in ("ps", "worker"):
                name = f"{tag}-{task.type}{task.index}.log"
                # As tfps-launch tells its tasks: TF's thread spinning follows the host's load.
                env = dict(task_env(self.spec.tf_config(task.type, task.index)),
                           TFPS_TASKS_ON_HOST=str(tasks))
                proc = self.procs.start([PY, "-m", "tfps.server"], log_name=name, env=env)
                self.pids[f"{task.type}{task.index}"] = proc.pid
                self.logs.append(os.path.join(procs.workdir, name))
        deadline = time.monotonic() + _SERVER_TIMEOUT
        for log in self.logs:  # wait until every server serves: no start-up CPU in timings
            while "serving on" not in open(log).read():
                if time.monotonic() > deadline or any(p.poll() is not None
                                                      for p in self.procs.procs):
                    self.close()
                    raise BenchError(f"server did not start: {log}")
                time.sleep(0.2)

    def chief_env(self) -> dict:
        """The chief's environment: its TF_CONFIG, the host's task count, and the servers'
        pids (``BENCH_PIDS``: the chief reports their CPU per step, `workloads.CpuMeter`)."""
        return dict(task_env(self.spec.tf_config("chief", 0)),
                    TFPS_TASKS_ON_HOST=str(len(self.pids) + 1),
                    BENCH_PIDS=json.dumps(self.pids))

    def close(self):
        self.procs.close()


def run_program(procs: Processes, argv, env, timeout=CHIEF_TIMEOUT, traffic=False) -> dict:
    """Runs one benchmark program to completion; returns its parsed ``bench:`` line. With
    `traffic`, the program writes its traced closure graph and the result gets its counts
    (``traffic``: tensors, bytes, ops on ps per step; see `count_traffic`)."""
    if traffic:
        graph = os.path.join(procs.workdir, f"graph-{len(procs.procs)}-{time.monotonic_ns()}.pb")
        result = run_program(procs, [*argv, f"--graph_out={graph}"], env, timeout)
        result["traffic"] = count_traffic(procs, graph, result)
        return result
    start = time.perf_counter()
    proc = procs.start(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out = proc.communicate()[0] if proc.stdout and not proc.stdout.closed else ""
        raise BenchError(
            f"timed out after {timeout}s: {' '.join(argv)}\n{(out or '')[-3000:]}") from None
    finally:
        kill_group(proc)
        procs.procs.remove(proc)
    lines = _BENCH_LINE.findall(out)
    if proc.returncode != 0 or not lines:
        raise BenchError(f"exit code {proc.returncode}: {' '.join(argv)}\n{out[-3000:]}")
    fields = dict(kv.split("=", 1) for kv in lines[-1].split() if "=" in kv)
    result = {k: _number(v) for k, v in fields.items()}
    result["wall"] = round(time.perf_counter() - start, 1)
    return result


def count_traffic(procs: Processes, graph: str, result: dict) -> dict:
    """The per-step traffic counts of a program's traced closure (``--graph_out``), with the
    run-time rows its ``rows=per_step,per_closure`` field reports and its closure shape
    (``closure=steps,trips``, default: ``steps_per_closure`` both)."""
    steps, trips = (str(result.get("closure") or "")).split(",") if result.get("closure") \
        else (result.get("steps_per_closure") or 1,) * 2
    rows = str(result.get("rows") or "0,0").split(",")
    argv = [PY, "-m", "tfps.train.traffic", graph, f"--steps={steps}", f"--trips={trips}",
            "--rows", *rows]
    proc = procs.start(argv, env=task_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    try:
        out, err = proc.communicate(timeout=_SERVER_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise BenchError(f"traffic count timed out: {graph}") from None
    finally:
        procs.procs.remove(proc)
    if proc.returncode != 0:
        raise BenchError(f"traffic count failed: {err.strip()[-500:]}")
    counts = json.loads(out.strip().splitlines()[-1])
    counts.pop("loop", None)
    return {k: round(v, 2) for k, v in counts.items()}


# A one-process baseline has no ps: nothing crosses.
NO_PS = {"tensors": 0, "bytes": 0, "bytes_resolved": 0, "ps_ops": 0}


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def median(values):
    values = sorted(values)
    n = len(values)
    if not n:
        return math.nan
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


# ------------------------------------------------------------------------------ rows
@dataclasses.dataclass
class Result:
    name: str
    tfps: float
    baseline: float
    ratio: float
    goal: str
    unit: str
    met: bool | None = None
    error: str | None = None
    detail: dict = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict:
        row = {"name": self.name, "tfps": self.tfps, "baseline": self.baseline,
               "ratio": self.ratio, "goal": self.goal, "unit": self.unit}
        if "traffic" in self.detail:
            row["traffic"] = self.detail["traffic"]
        for key in ("mode", "cpu_ms_per_step", "extra"):
            if key in self.detail:
                row[key] = self.detail[key]
        return row


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    goal: str          # as printed
    unit: str
    better: str        # "higher": ratio >= target meets the goal; "lower": ratio <= target
    target: float
    run: Callable      # run(procs, size, log) -> (tfps, baseline, ratio, detail)
    also: Callable | None = None  # also(detail) -> bool: a second goal the row must meet


def script(*parts) -> str:
    return os.path.join(HERE, *parts)


def common(steps, warmup, windows, workload="recsys", k=10, **extra) -> list[str]:
    args = [f"--workload={workload}", f"--steps={steps}", f"--warmup_steps={warmup}",
            f"--windows={windows}", f"--steps_per_closure={k}"]
    return args + [f"--{key}={value}" for key, value in extra.items()]


def paired(procs, reps, run_a, run_b, log, to_value=lambda r: r["steps_per_sec"],
           ratio=lambda a, b: a / b):
    """Runs A and B alternately `reps` times (A B, B A, ...); returns medians, the median
    paired ratio, and the detail (every value; the traffic counts each side reported)."""
    values_a, values_b, ratios, traffic, cpu = [], [], [], {}, {}
    for rep in range(reps):
        pair = {}
        order = ("a", "b") if rep % 2 == 0 else ("b", "a")
        for side in order:
            result = (run_a if side == "a" else run_b)(rep, pair)
            if "traffic" in result:
                traffic.setdefault("tfps" if side == "a" else "baseline", result["traffic"])
            cpu_fields = {k[4:]: v for k, v in result.items() if k.startswith("cpu_")}
            if cpu_fields:
                cpu.setdefault("tfps" if side == "a" else "baseline", []).append(cpu_fields)
            pair[side] = to_value(result)
            shown = {k: v for k, v in result.items() if k != "traffic"}
            log(f"  rep {rep + 1}/{reps} {'tfps' if side == 'a' else 'baseline'}: "
                f"{pair[side]:.3f}  {shown}")
        values_a.append(pair["a"])
        values_b.append(pair["b"])
        ratios.append(ratio(pair["a"], pair["b"]))
    detail = {"tfps_reps": values_a, "baseline_reps": values_b, "ratios": ratios}
    if traffic:
        detail["traffic"] = traffic
    if cpu:  # CPU ms per step of each process, the median over the repetitions
        detail["cpu_ms_per_step"] = {side: {name: median([r[name] for r in reps if name in r])
                                            for name in reps[0]}
                                     for side, reps in cpu.items()}
    return median(values_a), median(values_b), median(ratios), detail


def cluster_pair(procs, size, log, *, num_ps, num_workers, tag, argv_a, argv_b,
                 traffic=(True, True), **kw):
    """`paired` runs of two chiefs on one cluster; traffic counted in each side's first run
    (`traffic`: whether each side's program can write its graph)."""
    cluster = Cluster(procs, num_ps, num_workers, tag)
    try:
        env = cluster.chief_env()
        return paired(procs, size.reps,
                      lambda rep, pair: run_program(procs, argv_a(pair), env,
                                                    traffic=traffic[0] and rep == 0),
                      lambda rep, pair: run_program(procs, argv_b(pair), env,
                                                    traffic=traffic[1] and rep == 0), log, **kw)
    finally:
        cluster.close()
