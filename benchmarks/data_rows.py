"""The data rows (issue 23): training from TFRecord files through `tfps.data.FileInput`.

* ``file_input``: steps/s of the clicks model trained from TFRecord files in shard mode (each
  closure reads and parses its records on its worker) against the same model on the same kind
  of data generated in the workers (`workloads.clicks_dataset_fn`); 2 ps + 2 workers, the
  Trainer's own (measured) steps per closure on each side. Goal >= 0.9.
* ``file_input_service``: the same with the files read and parsed by TF's tf.data service (a
  dispatcher and one data worker, processes of their own on the same 2 cores). Goal >= 0.9.
* ``service_offload``: a preprocessing-heavy parse (string ids hashed, every pair of slots
  crossed) in service mode against shard mode. Report: on a 2-core machine the data worker
  takes its cores from the training workers, so offloading cannot win there; it measures
  what the service costs per step.

The files are written once per benchmark run into its work directory (a subprocess: this
module imports no TensorFlow).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from harness import PY, REPO, BenchError, Cluster, paired, run_program, script, task_env

# Records written for the data rows (enough that a quick run stays inside one epoch or two).
RECORDS = 200_000
# Warm-up steps of every side: the Trainer's packing measurement (~60 steps on 2 workers)
# and the first traces.
WARMUP = 120
_SERVICE_TIMEOUT = 120


def _data_dir(procs, text: bool) -> str:
    """The planted click files of this run (written on first use)."""
    path = os.path.join(procs.workdir, "clicks-text" if text else "clicks")
    if not os.path.exists(os.path.join(path, "MANIFEST.json")):
        code = ("import sys; sys.path.insert(0, 'examples'); from common import click_files; "
                f"click_files.write({path!r}, {RECORDS}, text={text})")
        done = subprocess.run([PY, "-c", code], cwd=REPO, env=task_env(), capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"writing the click files failed: {done.stderr[-2000:]}")
    return path


class DataService:
    """A dispatcher and `workers` data workers (``python -m tfps.data.service``)."""

    def __init__(self, procs, workers: int, tag: str):
        from tfps.cluster import free_ports  # pure Python: no TF import here

        ports = free_ports(workers + 1, "localhost")
        self.procs = procs
        self.address = f"localhost:{ports[0]}"
        self.pids: dict[str, int] = {}  # the chief reports their CPU per step too
        logs = []
        for i, port in enumerate(ports):
            role = "dispatcher" if i == 0 else "data_worker"
            argv = [PY, "-m", "tfps.data.service", role, "--address", f"localhost:{port}"]
            if i:
                argv += ["--dispatcher", self.address]
            name = f"{tag}-{role}{i}.log"
            self.pids[f"{role}{i - 1 if i else 0}"] = procs.start(argv, log_name=name,
                                                                    env=task_env()).pid
            logs.append(os.path.join(procs.workdir, name))
        deadline = time.monotonic() + _SERVICE_TIMEOUT
        for log in logs:
            while "serving on" not in open(log).read():
                if time.monotonic() > deadline:
                    raise BenchError(f"tf.data service did not start: {log}")
                time.sleep(0.2)


def _argv(size, data_dir, mode, parse="plain"):
    steps = 5 * size.k_recsys
    return [PY, script("tfps_side", "file_input.py"), f"--input={mode}", f"--parse={parse}",
            f"--data_dir={data_dir}", f"--steps={steps}", f"--warmup_steps={WARMUP}",
            f"--windows={size.windows}"]


def _pair(procs, size, log, tag, mode_a, mode_b, parse="plain", service=False):
    data_dir = _data_dir(procs, text=parse == "heavy")
    cluster = Cluster(procs, 2, 2, tag)
    try:
        env = cluster.chief_env()
        if service:
            data = DataService(cluster.procs, 1, tag)
            env["TFPS_DATA_SERVICE"] = data.address
            env["BENCH_PIDS"] = json.dumps({**json.loads(env["BENCH_PIDS"]), **data.pids})
        a, b, ratio, detail = paired(
            procs, size.reps,
            lambda rep, pair: run_program(procs, _argv(size, data_dir, mode_a, parse), env),
            lambda rep, pair: run_program(procs, _argv(size, data_dir, mode_b, parse), env), log)
    finally:
        cluster.close()
    detail["mode"] = f"{mode_a} vs {mode_b}, {parse} parse, measured steps per closure"
    return a, b, ratio, detail


def row_file_input(procs, size, log):
    return _pair(procs, size, log, "file_input", "shard", "generated")


def row_file_input_service(procs, size, log):
    return _pair(procs, size, log, "file_input_service", "service", "generated", service=True)


def row_service_offload(procs, size, log):
    return _pair(procs, size, log, "service_offload", "service", "shard", parse="heavy",
                 service=True)
