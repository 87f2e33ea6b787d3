"""The benchmark rows: each runs its tfps side and its baseline on one fresh cluster.

A row function returns ``(tfps value, baseline value, median paired ratio, detail)``; the
detail carries every repetition and, where a program can say, the per-step traffic counts of
both sides (``traffic``: tensors, bytes and ops on ps per step, from the traced closures).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time

import data_rows
from harness import (
    CHIEF_TIMEOUT,
    NO_PS,
    PY,
    REPO,
    BenchError,
    Cluster,
    Row,
    cluster_pair,
    common,
    kill_group,
    median,
    paired,
    run_program,
    script,
    task_env,
)

# Fixed packing of the trainer_overhead / sparse rows (steps per closure on both sides).
K_FIXED = 10
# ps_vs_local "best settings": many steps per closure (scheduling overhead amortised).
K_BEST = 100
# Micro-batches per update of accumulation_vs_local: one pull and one push per 256 (the
# Trainer fetches them as one stacked element and loops over them in a tf.while_loop).
K_ACCUM = 256
SPARSE_BIG, SPARSE_SMALL = 4_000_000, 40_000
# The best mode: H local steps per pull and push. Chosen by measurement (docs/performance.md):
# on the recsys data a closure of 1000 steps touches the whole table, so the rows it moves
# per step fall with H; quality_guard holds at 2 and 4 workers (clicks data, 4000 steps:
# 0.999 and 0.994 of per-step AUC with H = 1000).
H_BEST = 1000
# quality_guard's stale-reads mode: the dense layers read once every S steps.
S_STALE = 4
# dynamic_vs_static: ids uniform over this many (the static table's rows); a 2048-id step
# touches ~2000 of them, and the warm-up admits nearly all into the dynamic table.
DYNAMIC_IDS = 100_000


def row_trainer_overhead(procs, size, log):
    flags = common(size.k_recsys, size.warmup, size.windows)
    return cluster_pair(
        procs, size, log, num_ps=2, num_workers=2, tag="trainer_overhead",
        argv_a=lambda p: [PY, script("tfps_side", "trainer.py"), *flags],
        argv_b=lambda p: [PY, script("baselines", "tutorial_loop.py"), *flags])


def row_default_vs_tutorial(procs, size, log):
    n, warm = size.k_linear_default, 5 * size.warmup
    return cluster_pair(
        procs, size, log, num_ps=2, num_workers=2, tag="default_vs_tutorial",
        argv_a=lambda p: [PY, script("tfps_side", "trainer.py"),
                          *common(n, warm, size.windows, "linear", k=0)],
        # The tutorial schedules one step per function; a fifth of the steps keeps its
        # windows about as long in seconds as the Trainer's.
        argv_b=lambda p: [PY, script("baselines", "tutorial_loop.py"),
                          *common(max(n // 5, 20), warm // 5, size.windows, "linear", k=1)])


def _window(size, extra) -> int:
    """Steps per timed window: whole closures of the best mode when it is the one timed."""
    return max(size.k_local, H_BEST) if any("local_steps" in e for e in extra) else \
        size.k_local


def _ps_vs_local(procs, size, log, extra, mode):
    flags = common(_window(size, extra), size.warmup, size.windows, k=K_BEST)
    a, b, ratio, detail = cluster_pair(
        procs, size, log, num_ps=1, num_workers=1, tag="ps_vs_local",
        argv_a=lambda p: [PY, script("tfps_side", "trainer.py"), *flags, *extra],
        argv_b=lambda p: [PY, script("baselines", "local.py"), *flags],
        traffic=(True, False))
    detail.setdefault("traffic", {})["baseline"] = NO_PS
    detail["mode"] = mode
    return a, b, ratio, detail


def row_ps_vs_local(procs, size, log):
    """The best mode: H local steps per push (warmed up by one whole closure)."""
    return _ps_vs_local(procs, size, log,
                        [f"--local_steps={H_BEST}", f"--warmup_steps={H_BEST}"],
                        f"local_steps={H_BEST}")


def row_ps_vs_local_per_step(procs, size, log):
    """Per-step training (the default levers: stacked steps, fused dense, de-duplicated ids)."""
    return _ps_vs_local(procs, size, log, [], "per step")


def _closure_vs_loop(procs, size, log, extra, mode):
    """The Trainer's closure, with its variables on the worker that runs it
    (`workloads.variables_on_worker`), against one process's plain loop run on that worker
    (``baselines/worker_loop.py``): no parameter traffic on either side; the same model,
    optimizer, batches and steps per call (K_BEST)."""
    flags = [*common(_window(size, extra), size.warmup, size.windows, k=K_BEST),
             "--on_worker"]
    a, b, ratio, detail = cluster_pair(
        procs, size, log, num_ps=1, num_workers=1, tag="closure_vs_loop",
        argv_a=lambda p: [PY, script("tfps_side", "trainer.py"), *flags, *extra],
        argv_b=lambda p: [PY, script("baselines", "worker_loop.py"), *flags])
    detail["mode"] = mode
    return a, b, ratio, detail


def row_closure_vs_loop(procs, size, log):
    """The best mode (H local steps per push)."""
    return _closure_vs_loop(procs, size, log,
                            [f"--local_steps={H_BEST}", f"--warmup_steps={H_BEST}"],
                            f"local_steps={H_BEST}")


def row_closure_vs_loop_per_step(procs, size, log):
    """The default mode, K_BEST steps per closure."""
    return _closure_vs_loop(procs, size, log, [], f"per step, {K_BEST} per closure")


def row_ps_capacity(procs, size, log):
    """How many workers stepping at one process's speed one ps task keeps up with before its
    core saturates: ``workers_per_ps`` = (the step time of the same model in one process) /
    (the ps task's CPU ms per worker step). tfps's default mode (tfps side) against the
    tutorial's loop (baseline), 1 ps + 1 worker; the best mode's figure goes in the JSON
    (``best_workers_per_ps``). The one-process step time is measured in the same row."""
    flags = common(size.k_recsys * 5, size.warmup, size.windows)
    best = [f"--local_steps={H_BEST}", f"--warmup_steps={H_BEST}",
            f"--steps={max(size.k_local, 2 * H_BEST)}"]
    cluster = Cluster(procs, 1, 1, "ps_capacity")
    try:
        env = cluster.chief_env()
        one, default, tutorial, best_mode = [], [], [], []
        for rep in range(size.reps):
            one.append(run_program(procs, [PY, script("baselines", "local.py"), *flags],
                                   env)["steps_per_sec"])
            for runs, argv in ((default, [PY, script("tfps_side", "trainer.py"), *flags,
                                          "--steps_per_closure=0"]),
                               (tutorial, [PY, script("baselines", "tutorial_loop.py"),
                                           *flags]),
                               (best_mode, [PY, script("tfps_side", "trainer.py"), *flags,
                                            *best])):
                result = run_program(procs, argv, env, traffic=rep == 0)
                runs.append(result)
            log(f"  rep {rep + 1}/{size.reps}: one process {one[-1]:.1f} steps/s; ps CPU ms "
                f"per step: tfps {default[-1]['cpu_ps0']}, tutorial {tutorial[-1]['cpu_ps0']},"
                f" best {best_mode[-1]['cpu_ps0']}")
    finally:
        cluster.close()
    step_ms = 1e3 / median(one)

    def per_ps(runs):
        return step_ms / max(median([r["cpu_ps0"] for r in runs]), 1e-6)

    a, b = per_ps(default), per_ps(tutorial)
    detail = {"mode": "per step (default)", "extra": {
        "one_process_step_ms": round(step_ms, 3), "best_mode": f"local_steps={H_BEST}",
        "best_workers_per_ps": round(per_ps(best_mode), 2)},
        "traffic": {"tfps": default[0].get("traffic"), "baseline": tutorial[0].get("traffic"),
                    "best": best_mode[0].get("traffic")},
        "cpu_ms_per_step": {side: {k[4:]: median([r[k] for r in runs]) for k in runs[0]
                                   if k.startswith("cpu_")}
                            for side, runs in (("tfps", default), ("baseline", tutorial),
                                               ("best", best_mode))}}
    return a, b, a / b, detail


def row_sparse_table_scaling(procs, size, log):
    def argv(num_ids):
        return [PY, script("tfps_side", "trainer.py"),
                *common(size.k_recsys, size.warmup, size.windows, num_ids=num_ids)]
    # Values are step times (ms); ratio = time at 4 M rows / time at 40 k rows.
    return cluster_pair(
        procs, size, log, num_ps=2, num_workers=2, tag="sparse_table_scaling",
        argv_a=lambda p: argv(SPARSE_BIG), argv_b=lambda p: argv(SPARSE_SMALL),
        to_value=lambda r: 1e3 / r["steps_per_sec"])


def row_accumulation_vs_local(procs, size, log):
    n = size.k_accum
    warm = 4 * K_ACCUM
    return cluster_pair(
        procs, size, log, num_ps=1, num_workers=1, tag="accumulation_vs_local",
        argv_a=lambda p: [PY, script("tfps_side", "trainer.py"),
                          *common(n, warm, size.windows, "linear", k=K_ACCUM,
                                   accumulate=K_ACCUM)],
        argv_b=lambda p: [PY, script("baselines", "local.py"),
                          *common(n, warm, size.windows, "linear", k=K_ACCUM)],
        traffic=(True, False))  # one process: no ps traffic to count


def row_fit_overhead(procs, size, log):
    fit_args = [f"--steps_per_epoch={size.fit_steps}", f"--epochs={size.fit_epochs}"]

    def baseline(pair):
        # The same steps_per_execution as the tfps side chose (it runs first in rep 1).
        spe = _fit_spe.get("value") or 1
        return [PY, script("baselines", "keras_fit.py"), *fit_args,
                f"--steps_per_execution={spe}"]

    def tfps_side(pair):
        return [PY, script("tfps_side", "keras_fit.py"), *fit_args]

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
                os.path.relpath(script("tfps_side", "first_step.py"), REPO)]
        start = time.perf_counter()
        proc = procs.start(argv, env=task_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        seen, lines = None, []
        try:
            deadline = start + CHIEF_TIMEOUT
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
        proc = procs.start([PY, "-c", "import tensorflow"], env=task_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(CHIEF_TIMEOUT)
        finally:
            kill_group(proc)
            procs.procs.remove(proc)
        if proc.returncode != 0:
            raise BenchError(f"python -c 'import tensorflow' exited {proc.returncode}")
        return {"seconds": time.perf_counter() - start}

    return paired(procs, size.launch_reps, launch, bare_import, log,
                  to_value=lambda r: r["seconds"])




# ------------------------------------------------------------------------------ traffic rows
# time_to_auc's target: 0.97 x the oracle's AUC is reached after ~900 steps, a few seconds
# (benchmarks/results/2026-11-30-full.md), too short to time: 0.98.
AUC_TARGET = 0.98


def row_time_to_auc(procs, size, log):
    """Training seconds until the held-out AUC reaches AUC_TARGET x the oracle's: tfps (1 ps + 1
    worker, the best mode) against one process with the same model, optimizer and batch; both
    warm up (trace) on the same first K_BEST steps."""
    flags = [f"--steps={size.auc_chunk}", f"--max_steps={size.auc_max_steps}",
             "--workload=clicks", "--windows=1", f"--target={AUC_TARGET}",
             f"--warmup_steps={K_BEST}"]
    a, b, ratio, detail = cluster_pair(
        procs, size, log, num_ps=1, num_workers=1, tag="time_to_auc",
        argv_a=lambda p: [PY, script("tfps_side", "time_to_auc.py"), *flags,
                          f"--local_steps={H_BEST}"],
        argv_b=lambda p: [PY, script("baselines", "time_to_auc_local.py"), *flags,
                          f"--steps_per_closure={K_BEST}"],
        to_value=lambda r: r["seconds"], traffic=(False, False))
    detail["mode"] = f"local_steps={H_BEST}"
    return a, b, ratio, detail


def row_bytes_per_step(procs, size, log):
    """Bytes crossing worker <-> ps per step on the clicks data: the time_to_auc mode against
    the tutorial loop (10 steps per closure), 1 ps + 1 worker; counted, not timed."""
    flags = ["--workload=clicks", f"--steps={H_BEST}", "--windows=1"]
    sides = {"a": [PY, script("tfps_side", "trainer.py"), *flags, f"--local_steps={H_BEST}",
                   f"--warmup_steps={H_BEST}"],
             "b": [PY, script("baselines", "tutorial_loop.py"), *flags, "--steps_per_closure=10",
                   "--warmup_steps=10"]}
    one = dataclasses.replace(size, reps=1)
    a, b, ratio, detail = cluster_pair(
        procs, one, log, num_ps=1, num_workers=1, tag="bytes_per_step",
        argv_a=lambda p: sides["a"], argv_b=lambda p: sides["b"],
        to_value=lambda r: r["traffic"]["bytes_resolved"])
    detail["mode"] = f"local_steps={H_BEST}"
    return a, b, ratio, detail


def row_quality_guard(procs, size, log):
    """Held-out AUC of the worst arithmetic-changing mode (local steps, stale reads, at the
    settings the speed rows use) over per-step training's, at equal examples, with 2 (and in
    the full run 4) workers."""
    modes = {f"local_steps={H_BEST}": [f"--local_steps={H_BEST}"],
             f"read_every={S_STALE}": [f"--read_every={S_STALE}"]}
    flags = ["--workload=clicks", f"--steps={size.quality_steps}", f"--steps_per_closure={K_FIXED}"]
    worst, cpu = None, {}
    for workers in size.quality_workers:
        cluster = Cluster(procs, 2, workers, f"quality{workers}")
        try:
            env = cluster.chief_env()

            def auc(extra, env=env, workers=workers):
                result = run_program(procs, [PY, script("tfps_side", "quality.py"), *flags,
                                             *extra], env)
                cpu.setdefault(f"{workers} workers, {' '.join(extra) or 'per step'}", {
                    k[4:]: v for k, v in result.items() if k.startswith("cpu_")})
                return result["auc"]

            per_step = auc([])
            for name, extra in modes.items():
                value = auc(extra)
                log(f"  {workers} workers: {name} auc={value:.4f}, per step {per_step:.4f}")
                if worst is None or value / per_step < worst[2]:
                    worst = (value, per_step, value / per_step, f"{name}, {workers} workers")
        finally:
            cluster.close()
    value, per_step, ratio, mode = worst
    return value, per_step, ratio, {"mode": mode, "cpu_ms_per_step": cpu}


def row_dynamic_vs_static(procs, size, log):
    """The recsys workload with its ids in a `DynamicEmbedding` (hash tables on the ps) against
    a static sharded `Embedding` of the same rows, 2 ps + 2 workers, 10 steps per closure:
    the same ids, so the same rows touched per step (the warm-up admits them all)."""
    def argv(table):
        return [PY, script("tfps_side", "dynamic_table.py"), f"--table={table}",
                *common(size.k_recsys, size.warmup, size.windows, num_ids=DYNAMIC_IDS)]
    return cluster_pair(procs, size, log, num_ps=2, num_workers=2, tag="dynamic_vs_static",
                        argv_a=lambda p: argv("dynamic"), argv_b=lambda p: argv("static"))


ROWS = [
    Row("trainer_overhead", ">= 0.98", "steps/s", "higher", 0.98, row_trainer_overhead),
    Row("default_vs_tutorial", ">= 5", "steps/s", "higher", 5.0, row_default_vs_tutorial),
    Row("ps_vs_local", ">= 0.9", "steps/s", "higher", 0.9, row_ps_vs_local),
    Row("ps_vs_local_per_step", "report", "steps/s", "higher", 0.0, row_ps_vs_local_per_step),
    Row("closure_vs_loop", ">= 0.9", "steps/s", "higher", 0.9, row_closure_vs_loop),
    Row("closure_vs_loop_per_step", ">= 0.9", "steps/s", "higher", 0.9,
        row_closure_vs_loop_per_step),
    Row("ps_capacity", ">= 2 (best >= 20)", "workers/ps", "higher", 2.0, row_ps_capacity,
        also=lambda detail: detail["extra"]["best_workers_per_ps"] >= 20),
    Row("sparse_table_scaling", "<= 1.1 (time)", "ms/step", "lower", 1.1,
        row_sparse_table_scaling),
    Row("accumulation_vs_local", ">= 0.5", "steps/s", "higher", 0.5,
        row_accumulation_vs_local),
    Row("launch_ready", "<= 2.5 (time)", "s", "lower", 2.5, row_launch_ready),
    Row("fit_overhead", ">= 0.98", "steps/s", "higher", 0.98, row_fit_overhead),
    Row("time_to_auc", "<= 1.2 (time, 0.98 x oracle)", "s", "lower", 1.2, row_time_to_auc),
    Row("bytes_per_step", "<= 0.25", "bytes", "lower", 0.25, row_bytes_per_step),
    Row("quality_guard", ">= 0.99", "auc", "higher", 0.99, row_quality_guard),
    Row("dynamic_vs_static", ">= 0.7", "steps/s", "higher", 0.7, row_dynamic_vs_static),
    # Training from files (issue 23): benchmarks/data_rows.py.
    Row("file_input", ">= 0.9", "steps/s", "higher", 0.9, data_rows.row_file_input),
    Row("file_input_service", ">= 0.9", "steps/s", "higher", 0.9,
        data_rows.row_file_input_service),
    Row("service_offload", "report", "steps/s", "higher", 0.0, data_rows.row_service_offload),
]
