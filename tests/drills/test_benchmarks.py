"""The benchmark harness (benchmarks/run.py) on tiny configurations, so that it cannot rot.

`test_tiny_rows` runs ``ps_capacity`` (four programs on one cluster: one process's loop, the
Trainer per step and in the best mode, the tutorial's loop; the CPU meters and the traffic
counts) and ``bytes_per_step`` end to end: `Cluster`, `run_program`, `paired`, the table and
the JSON output. `test_the_other_rows` runs every other row whose programs or flags no row
here runs already (`COVERED` names where each skipped one's are exercised): the fit programs,
the tfps-launch row, the data rows among them (marked slow: every row's chiefs import
TensorFlow, about half a minute per row on 2 cores).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

RUN = os.path.join(REPO, "benchmarks", "run.py")
ROW_NAMES = ["trainer_overhead", "default_vs_tutorial", "ps_vs_local", "ps_vs_local_per_step",
             "closure_vs_loop", "closure_vs_loop_per_step", "ps_capacity",
             "sparse_table_scaling", "accumulation_vs_local", "launch_ready", "fit_overhead",
             "time_to_auc", "bytes_per_step", "quality_guard", "dynamic_vs_static",
             "file_input", "file_input_service", "service_offload"]
# Rows whose programs write their traced graphs, and the sides whose traffic is counted
# (accumulation_vs_local's baseline is one process with a stacked loop: nothing to count).
BOTH = {"tfps", "baseline"}
COUNTED = {"trainer_overhead": BOTH, "default_vs_tutorial": BOTH, "ps_vs_local": BOTH,
           "ps_vs_local_per_step": BOTH, "closure_vs_loop": BOTH,
           "closure_vs_loop_per_step": BOTH, "ps_capacity": BOTH | {"best"},
           "sparse_table_scaling": BOTH,
           "accumulation_vs_local": {"tfps"}, "bytes_per_step": BOTH,
           "dynamic_vs_static": BOTH}


# What a one-process baseline's traffic is (benchmarks/harness.py NO_PS): nothing crosses.
NO_PS_SIDE = {"tensors": 0, "bytes": 0, "bytes_resolved": 0, "ps_ops": 0}
# Rows that start no ps/worker cluster of their own (launch_ready times tfps-launch's).
NO_CLUSTER = {"launch_ready"}


def _run(tmp_path, *args, timeout):
    out = tmp_path / "rows.json"
    proc = subprocess.Popen([sys.executable, RUN, "--tiny", "--json", str(out), *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 15)  # the harness ends its own clusters on SIGTERM
        text, _ = proc.communicate(timeout=30)
        pytest.fail(f"benchmarks/run.py --tiny still running after {timeout}s:\n{text[-4000:]}")
    assert proc.returncode == 0, text[-4000:]
    return json.loads(out.read_text()), text


def _check(rows, names, text):
    assert [r["name"] for r in rows] == names, text[-3000:]
    for row in rows:
        assert {"name", "tfps", "baseline", "ratio", "goal", "unit"} <= set(row)
        for key in ("tfps", "baseline", "ratio"):
            assert row[key] > 0, (row, text[-3000:])
        if row["name"] in COUNTED:
            traffic = row["traffic"]
            assert set(traffic) == COUNTED[row["name"]], row
            for side in traffic.values():
                assert {"tensors", "bytes", "ps_ops"} <= set(side), row
                if side != NO_PS_SIDE:  # a one-process baseline has no traced closure
                    assert "ops" in side, row
        if row["name"] not in NO_CLUSTER:  # CPU ms per step of every process of the cluster
            cpu = row["cpu_ms_per_step"]
            assert all({"ps0", "worker0", "chief"} <= set(p) for p in cpu.values()), row
    assert "| name" in text  # the printed table


def test_registry_has_every_row():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import run
    finally:
        sys.path.pop(0)
    assert [r.name for r in run.ROWS] == ROW_NAMES
    assert set(run.SIZES) == {"tiny", "quick", "full"}


def test_baselines_import_no_tfps():
    """The baselines are plain TF programs: no tfps import in them or in what they share."""
    bench = os.path.join(REPO, "benchmarks")
    files = [os.path.join(bench, "workloads.py"),
             os.path.join(REPO, "examples", "common", "planted_clicks.py")] + [
        os.path.join(bench, "baselines", f) for f in os.listdir(os.path.join(bench, "baselines"))
        if f.endswith(".py")]
    for path in files:
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "tfps" or n.startswith("tfps.") for n in names), path


# ps_capacity runs four of the programs (one process's loop, the Trainer per step and in the
# best mode, the tutorial's loop) on one cluster, with the CPU meters and the traffic counts.
TINY_ROWS = ["ps_capacity", "bytes_per_step"]


def test_tiny_rows(tmp_path):
    rows, text = _run(tmp_path, "--only", ",".join(TINY_ROWS), timeout=900)
    _check(rows, TINY_ROWS, text)


# Rows whose programs and flags another row already runs here (the harness cannot rot
# unseen): each pair of programs below is ps_capacity's, with a flag another row also uses.
COVERED = {
    "trainer_overhead": "ps_capacity (tfps_side/trainer.py and baselines/tutorial_loop.py)",
    "ps_vs_local": "ps_capacity (the best mode, --local_steps, against baselines/local.py)",
    "ps_vs_local_per_step": "ps_vs_local without --local_steps",
    "closure_vs_loop_per_step": "closure_vs_loop without --local_steps",
    "sparse_table_scaling": "trainer.py with --num_ids (dynamic_vs_static passes it too)",
    "accumulation_vs_local": "trainer.py --accumulate against local.py, on linear data "
                             "(default_vs_tutorial's workload)",
    "file_input_service": "service_offload (file_input.py --input=service, with the data "
                          "service) and file_input (--input=generated, --parse=plain)",
}


@pytest.mark.slow
def test_the_other_rows(tmp_path):
    names = [name for name in ROW_NAMES if name not in TINY_ROWS and name not in COVERED]
    rows, text = _run(tmp_path, "--only", ",".join(names), timeout=1800)
    _check(rows, names, text)
