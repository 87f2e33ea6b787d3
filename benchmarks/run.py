"""tfps against raw TensorFlow, side by side, on real multi-process clusters on this machine.

    python benchmarks/run.py [--quick | --tiny] [--json FILE] [--only ROW[,ROW...]]

Each row starts its own cluster (``python -m tfps.server`` ps and worker processes with
TF_CONFIG, on free loopback ports), then runs its tfps chief and its baseline chief against
that same running cluster, alternately (A B, B A, A B, ...), `reps` times each; every chief
prints one ``bench: steps_per_sec=...`` line measured after its warm-up. Reported: the median
of each side, and the ratio = the median of the paired per-repetition ratios (pairs run
back to back, so slow drift of the machine hits both sides of a pair alike).

Baselines (``benchmarks/baselines/``) import no tfps: they are the official PSS tutorial's
loop, raw tf_keras ``fit``, or one process without a strategy. ``--quick`` keeps the whole run
under 5 minutes on 2 cores; ``--tiny`` (seconds per row) is for the test that keeps this
harness from rotting; the default (full) run uses more steps and repetitions.

Every process is started in its own session and ended by process group (also on errors and
Ctrl-C); every wait has a timeout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable
TASK_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_FAIL_FAST": "use_caller",
            "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1"}
# Longest a single chief may run before it is killed and the row marked failed.
_CHIEF_TIMEOUT = 600
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


SIZES = {
    "tiny": Size(reps=1, windows=1, k_recsys=30, k_linear_default=200, k_local=100,
                 k_accum=640, fit_epochs=2, fit_steps=20, launch_reps=1, warmup=10),
    # Start-up (six TF imports per row, tracing) is ~30 s a row on 2 cores (the tiny run):
    # quick adds ~10 s of steady-state measurement per row to stay under 5 minutes.
    "quick": Size(reps=1, windows=2, k_recsys=60, k_linear_default=600, k_local=120,
                  k_accum=1280, fit_epochs=2, fit_steps=40, launch_reps=1, warmup=20),
    "full": Size(reps=3, windows=3, k_recsys=400, k_linear_default=4000, k_local=500,
                 k_accum=6400, fit_epochs=4, fit_steps=200, launch_reps=3, warmup=100),
}

# Fixed packing of the trainer_overhead / sparse rows (steps per closure on both sides).
K_FIXED = 10
# ps_vs_local "best settings": many steps per closure (scheduling overhead amortised).
K_BEST = 100
# Micro-batches per update of accumulation_vs_local: one pull and one push per 256 (the
# Trainer fetches them as one stacked element and loops over them in a tf.while_loop).
K_ACCUM = 256
SPARSE_BIG, SPARSE_SMALL = 4_000_000, 40_000


# ------------------------------------------------------------------------------ processes
def _env(tf_config: dict | None = None) -> dict:
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
        for task, _ in self.spec.tasks():
            if task.type in ("ps", "worker"):
                name = f"{tag}-{task.type}{task.index}.log"
                self.procs.start([PY, "-m", "tfps.server"], log_name=name,
                                 env=_env(self.spec.tf_config(task.type, task.index)))
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
        return _env(self.spec.tf_config("chief", 0))

    def close(self):
        self.procs.close()


def run_program(procs: Processes, argv, env, timeout=_CHIEF_TIMEOUT) -> dict:
    """Runs one benchmark program to completion; returns its parsed ``bench:`` line."""
    start = time.perf_counter()
    proc = procs.start(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out = proc.communicate()[0] if proc.stdout and not proc.stdout.closed else ""
        raise BenchError(f"timed out after {timeout}s: {' '.join(argv)}\n{(out or '')[-3000:]}")
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
        return {"name": self.name, "tfps": self.tfps, "baseline": self.baseline,
                "ratio": self.ratio, "goal": self.goal, "unit": self.unit}


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    goal: str          # as printed
    unit: str
    better: str        # "higher": ratio >= target meets the goal; "lower": ratio <= target
    target: float
    run: Callable      # run(procs, size, log) -> (tfps, baseline, ratio, detail)


def _script(*parts) -> str:
    return os.path.join(HERE, *parts)


def _common(steps, warmup, windows, workload="recsys", k=K_FIXED, **extra) -> list[str]:
    args = [f"--workload={workload}", f"--steps={steps}", f"--warmup_steps={warmup}",
            f"--windows={windows}", f"--steps_per_closure={k}"]
    return args + [f"--{key}={value}" for key, value in extra.items()]


def paired(procs, reps, run_a, run_b, log, to_value=lambda r: r["steps_per_sec"],
           ratio=lambda a, b: a / b):
    """Runs A and B alternately `reps` times (A B, B A, ...); returns medians and the
    median paired ratio."""
    values_a, values_b, ratios = [], [], []
    for rep in range(reps):
        pair = {}
        order = ("a", "b") if rep % 2 == 0 else ("b", "a")
        for side in order:
            result = (run_a if side == "a" else run_b)(rep, pair)
            pair[side] = to_value(result)
            log(f"  rep {rep + 1}/{reps} {'tfps' if side == 'a' else 'baseline'}: "
                f"{pair[side]:.3f}  {result}")
        values_a.append(pair["a"])
        values_b.append(pair["b"])
        ratios.append(ratio(pair["a"], pair["b"]))
    return median(values_a), median(values_b), median(ratios), {
        "tfps_reps": values_a, "baseline_reps": values_b, "ratios": ratios}


def _cluster_pair(procs, size, log, *, num_ps, num_workers, tag, argv_a, argv_b, **kw):
    cluster = Cluster(procs, num_ps, num_workers, tag)
    try:
        env = cluster.chief_env()
        return paired(procs, size.reps,
                      lambda rep, pair: run_program(procs, argv_a(pair), env),
                      lambda rep, pair: run_program(procs, argv_b(pair), env), log, **kw)
    finally:
        cluster.close()


def row_trainer_overhead(procs, size, log):
    common = _common(size.k_recsys, size.warmup, size.windows)
    return _cluster_pair(
        procs, size, log, num_ps=2, num_workers=2, tag="trainer_overhead",
        argv_a=lambda p: [PY, _script("tfps_side", "trainer.py"), *common],
        argv_b=lambda p: [PY, _script("baselines", "tutorial_loop.py"), *common])


def row_default_vs_tutorial(procs, size, log):
    n, warm = size.k_linear_default, 5 * size.warmup
    return _cluster_pair(
        procs, size, log, num_ps=2, num_workers=2, tag="default_vs_tutorial",
        argv_a=lambda p: [PY, _script("tfps_side", "trainer.py"),
                          *_common(n, warm, size.windows, "linear", k=0)],
        # The tutorial schedules one step per function; a fifth of the steps keeps its
        # windows about as long in seconds as the Trainer's.
        argv_b=lambda p: [PY, _script("baselines", "tutorial_loop.py"),
                          *_common(max(n // 5, 20), warm // 5, size.windows, "linear", k=1)])


def row_ps_vs_local(procs, size, log):
    common = _common(size.k_local, size.warmup, size.windows, k=K_BEST)
    return _cluster_pair(
        procs, size, log, num_ps=1, num_workers=1, tag="ps_vs_local",
        argv_a=lambda p: [PY, _script("tfps_side", "trainer.py"), *common],
        argv_b=lambda p: [PY, _script("baselines", "local.py"), *common])


def row_sparse_table_scaling(procs, size, log):
    def argv(num_ids):
        return [PY, _script("tfps_side", "trainer.py"),
                *_common(size.k_recsys, size.warmup, size.windows, num_ids=num_ids)]
    # Values are step times (ms); ratio = time at 4 M rows / time at 40 k rows.
    return _cluster_pair(
        procs, size, log, num_ps=2, num_workers=2, tag="sparse_table_scaling",
        argv_a=lambda p: argv(SPARSE_BIG), argv_b=lambda p: argv(SPARSE_SMALL),
        to_value=lambda r: 1e3 / r["steps_per_sec"])


def row_accumulation_vs_local(procs, size, log):
    n = size.k_accum
    warm = 4 * K_ACCUM
    return _cluster_pair(
        procs, size, log, num_ps=1, num_workers=1, tag="accumulation_vs_local",
        argv_a=lambda p: [PY, _script("tfps_side", "trainer.py"),
                          *_common(n, warm, size.windows, "linear", k=K_ACCUM,
                                   accumulate=K_ACCUM)],
        argv_b=lambda p: [PY, _script("baselines", "local.py"),
                          *_common(n, warm, size.windows, "linear", k=K_ACCUM)])


def row_fit_overhead(procs, size, log):
    fit_args = [f"--steps_per_epoch={size.fit_steps}", f"--epochs={size.fit_epochs}"]

    def baseline(pair):
        # The same steps_per_execution as the tfps side chose (it runs first in rep 1).
        spe = _fit_spe.get("value") or 1
        return [PY, _script("baselines", "keras_fit.py"), *fit_args,
                f"--steps_per_execution={spe}"]

    def tfps_side(pair):
        return [PY, _script("tfps_side", "keras_fit.py"), *fit_args]

    _fit_spe.clear()
    cluster = Cluster(procs, 2, 2, "fit_overhead")
    try:
        env = cluster.chief_env()

        def run_a(rep, pair):
            result = run_program(procs, tfps_side(pair), env)
            _fit_spe["value"] = result["steps_per_execution"]
            return result

        def run_b(rep, pair):
            if "value" not in _fit_spe:
                raise BenchError("fit_overhead: the tfps side must run first")
            return run_program(procs, baseline(pair), env)

        return paired(procs, size.reps, run_a, run_b, log)
    finally:
        cluster.close()


_fit_spe: dict = {}


def row_launch_ready(procs, size, log):
    """Seconds from spawning tfps-launch (2 ps + 2 workers) to the chief's first completed
    step, against seconds for one bare ``python -c "import tensorflow"``."""

    def launch(rep, pair):
        log_dir = os.path.join(procs.workdir, f"launch{rep}")
        argv = [PY, "-m", "tfps.launch", "--num-ps", "2", "--num-workers", "2",
                "--max-restarts", "0", "--log-dir", log_dir,
                os.path.relpath(_script("tfps_side", "first_step.py"), REPO)]
        start = time.perf_counter()
        proc = procs.start(argv, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        seen, lines = None, []
        try:
            deadline = start + _CHIEF_TIMEOUT
            import selectors
            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ)
            while seen is None and time.perf_counter() < deadline:
                if not sel.select(timeout=1.0):
                    if proc.poll() is not None:
                        break
                    continue
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if "bench: first_step" in line:
                    seen = time.perf_counter() - start
            if seen is not None:  # let the launcher end its cluster itself
                try:
                    proc.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            kill_group(proc)
            procs.procs.remove(proc)
        if seen is None:
            raise BenchError("tfps-launch: no first step\n" + "".join(lines[-40:]))
        return {"seconds": seen}

    def bare_import(rep, pair):
        start = time.perf_counter()
        proc = procs.start([PY, "-c", "import tensorflow"], env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(_CHIEF_TIMEOUT)
        finally:
            kill_group(proc)
            procs.procs.remove(proc)
        if proc.returncode != 0:
            raise BenchError(f"python -c 'import tensorflow' exited {proc.returncode}")
        return {"seconds": time.perf_counter() - start}

    return paired(procs, size.launch_reps, launch, bare_import, log,
                  to_value=lambda r: r["seconds"])


ROWS = [
    Row("trainer_overhead", ">= 0.98", "steps/s", "higher", 0.98, row_trainer_overhead),
    Row("default_vs_tutorial", ">= 5", "steps/s", "higher", 5.0, row_default_vs_tutorial),
    Row("ps_vs_local", ">= 0.9", "steps/s", "higher", 0.9, row_ps_vs_local),
    Row("sparse_table_scaling", "<= 1.1 (time)", "ms/step", "lower", 1.1,
        row_sparse_table_scaling),
    Row("accumulation_vs_local", ">= 0.5", "steps/s", "higher", 0.5,
        row_accumulation_vs_local),
    Row("launch_ready", "report (<= 2.5)", "s", "lower", 2.5, row_launch_ready),
    Row("fit_overhead", ">= 0.98", "steps/s", "higher", 0.98, row_fit_overhead),
]


# ------------------------------------------------------------------------------ driver
def run_rows(rows, size: Size, log=print, workdir=None) -> list[Result]:
    """Runs `rows` at `size`; a failing row is reported with NaNs and its error."""
    results = []
    with tempfile.TemporaryDirectory(prefix="tfps-bench-") as tmp:
        procs = Processes(workdir or tmp)
        try:
            for row in rows:
                log(f"== {row.name}")
                start = time.perf_counter()
                try:
                    a, b, ratio, detail = row.run(procs, size, log)
                    met = ratio >= row.target if row.better == "higher" else ratio <= row.target
                    results.append(Result(row.name, a, b, ratio, row.goal, row.unit, met,
                                          detail=detail))
                except BenchError as e:
                    log(f"  FAILED: {e}")
                    results.append(Result(row.name, math.nan, math.nan, math.nan, row.goal,
                                          row.unit, None, error=str(e).splitlines()[0]))
                finally:
                    procs.close()
                log(f"  {row.name}: {time.perf_counter() - start:.0f}s")
        finally:
            procs.close()
    return results


def format_table(results: list[Result]) -> str:
    rows = [("name", "tfps", "baseline", "ratio", "goal", "unit", "met")]
    for r in results:
        met = "FAILED" if r.error else ("yes" if r.met else "no")
        rows.append((r.name, _fmt(r.tfps), _fmt(r.baseline), f"{r.ratio:.3f}", r.goal,
                     r.unit, met))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.1f}" if value >= 100 else f"{value:.3g}"


def machine() -> str:
    import importlib.metadata as md
    return (f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
            f", TensorFlow {md.version('tensorflow')}, tf_keras {md.version('tf_keras')}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n")[0])
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument("--quick", action="store_true", help="whole run under 5 min on 2 cores")
    tier.add_argument("--tiny", action="store_true", help="seconds per row (the test)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as a JSON list")
    parser.add_argument("--only", metavar="ROWS", help="comma-separated row names")
    parser.add_argument("--reps", type=int, help="override the repetitions per side")
    args = parser.parse_args(argv)

    size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    if args.reps:
        size = dataclasses.replace(size, reps=args.reps, launch_reps=args.reps)
    rows = ROWS
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {r.name for r in ROWS})
        if unknown:
            parser.error(f"unknown rows: {', '.join(unknown)}")
        rows = [r for r in ROWS if r.name in names]

    def log(line):
        print(line, file=sys.stderr, flush=True)

    def on_term(signum, frame):  # end every started process, as Ctrl-C does
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    start = time.perf_counter()
    try:
        results = run_rows(rows, size, log)
    except KeyboardInterrupt:
        log("interrupted; every process ended")
        return 130
    print(f"tfps benchmarks ({'tiny' if args.tiny else 'quick' if args.quick else 'full'}): "
          f"{machine()}; {time.perf_counter() - start:.0f}s")
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_json() for r in results], f, indent=1)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
