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
Ctrl-C); every wait has a timeout. Where a program can write its traced closure graph, the
row also gets each side's per-step traffic counts (``tfps.train.traffic``: tensors and bytes
between worker and ps, ops on ps), which machine load cannot move; ``--json`` carries them.

Modules: `harness` (processes, clusters, programs, pairs, the traffic counts), `rows` (the
rows and their registry, ``ROWS``), this driver.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SIZES, BenchError, Processes, Result, Size
from rows import ROWS

__all__ = ["ROWS", "SIZES", "main", "run_rows"]


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
                    if row.also is not None:
                        met = met and row.also(detail)
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


def _markdown(rows: list[tuple]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def format_table(results: list[Result]) -> str:
    """The results table, then the traffic each side's closure moves per step."""
    rows = [("name", "tfps", "baseline", "ratio", "goal", "unit", "met", "tfps mode")]
    for r in results:
        met = "FAILED" if r.error else ("yes" if r.met else "no")
        rows.append((r.name, _fmt(r.tfps), _fmt(r.baseline), f"{r.ratio:.3f}", r.goal,
                     r.unit, met if r.goal != "report" or r.error else "-",
                     r.detail.get("mode", "")))
    traffic = [("name", "side", "tensors/step", "bytes/step", "ops on ps/step")]
    for r in results:
        for side, t in r.detail.get("traffic", {}).items():
            traffic.append((r.name, side, f"{t['tensors']:g}",
                            f"{t.get('bytes_resolved', t['bytes']):,.0f}", f"{t['ps_ops']:g}"))
    text = _markdown(rows)
    return text + ("\n\nper-step traffic (counted from the traced closures):\n" +
                   _markdown(traffic) if len(traffic) > 1 else "")


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
