"""The modes table of docs/performance.md: every Trainer mode on one cluster, side by side.

    python benchmarks/modes_table.py [--steps 1000] [--reps 1]

Starts 1 ps + 1 worker (as benchmarks/run.py does), then, alternately with one process's
plain loop of the same model (``baselines/local.py``), runs the recsys workload in each mode of
`tfps.train.modes` and prints, per mode: steps/s and its ratio to one process, the bytes that
cross worker <-> ps per step (counted from the traced closure, rows at their run-time counts),
the ps task's CPU ms per step and what it implies, ``workers_per_ps`` = one process's step
time / the ps's CPU per step (how many workers stepping at one-process speed one ps task keeps
up with). AUC at equal examples is the ``quality_guard`` row's (clicks data, 2 workers).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PY, Cluster, Processes, common, median, run_program, script
from rows import H_BEST, K_FIXED, S_STALE

MODES = {
    "per step (default)": ["--steps_per_closure=0"],
    f"per step, {K_FIXED} per closure": [f"--steps_per_closure={K_FIXED}"],
    f"stale reads, every {S_STALE}": [f"--read_every={S_STALE}"],
    "accumulate 16": ["--accumulate=16"],
    f"local steps {H_BEST // 10}": [f"--local_steps={H_BEST // 10}"],
    f"local steps {H_BEST}": [f"--local_steps={H_BEST}"],
    f"local steps {H_BEST}, bfloat16": [f"--local_steps={H_BEST}", "--transfer=bfloat16"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps per timed window")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args(argv)
    with_tmp = os.environ.get("TMPDIR", "/tmp")
    procs = Processes(with_tmp)
    cluster = Cluster(procs, 1, 1, "modes")
    rows = []
    try:
        env = cluster.chief_env()
        local = [PY, script("baselines", "local.py"), *common(args.steps, 200, 2)]
        for name, extra in MODES.items():
            steps = max(args.steps, 2 * H_BEST) if "local" in name else args.steps
            tfps = [PY, script("tfps_side", "trainer.py"),
                    *common(steps, max(200, H_BEST), 2), *extra]
            runs, ones = [], []
            for rep in range(args.reps):
                ones.append(run_program(procs, local, env)["steps_per_sec"])
                runs.append(run_program(procs, tfps, env, traffic=rep == 0))
            speed = median([r["steps_per_sec"] for r in runs])
            ps_ms = median([r["cpu_ps0"] for r in runs])
            step_ms = 1e3 / median(ones)
            traffic = runs[0]["traffic"]
            rows.append((name, f"{speed:.1f}", f"{speed / median(ones):.3f}",
                         f"{traffic['bytes_resolved']:,.0f}", f"{ps_ms:.3f}",
                         f"{median([r['cpu_worker0'] for r in runs]):.3f}",
                         f"{step_ms / max(ps_ms, 1e-6):.1f}"))
            print(f"  {name}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        cluster.close()
        procs.close()
    header = ("mode", "steps/s", "vs one process", "bytes/step", "ps CPU ms/step",
              "worker CPU ms/step", "workers per ps")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for i, row in enumerate([header, *rows]):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return 0


if __name__ == "__main__":
    sys.exit(main())
