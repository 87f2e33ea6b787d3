"""A Slurm batch script for a tfps job: ``tfps-launch --emit slurm``.

One ``srun`` step runs every task; each runs ``tfps-launch --from-env SCRIPT ARGS``, which reads
the step from Slurm's environment (`tfps.slurm`). The builder is pure and returns the text.

What the job recovers from by itself (each launcher restarts its own task, ``--max-restarts``
times): a worker that dies is restarted in place and rejoins; a ps that dies is restarted in
place, and the chief's launcher, which watches every ps address, restarts the chief once the
ps is back, from its latest checkpoint (`tfps.launch.peers`); a chief killed by a signal
resumes from its checkpoint. When the chief is done, its launcher tells the others on the
chief's port and they exit 0, so the step ends cleanly; the evaluator's step is ended too.

>>> text = sbatch_script(script="train.py", num_ps=2, num_workers=2, nodes=2)
>>> [l for l in text.splitlines() if l.startswith("#SBATCH --n")]
['#SBATCH --nodes=2', '#SBATCH --ntasks=5', '#SBATCH --ntasks-per-node=3']
"""

from __future__ import annotations

import math
import os
import shlex
from typing import Sequence

from tfps import validate
from tfps._env import TASK_ENV
from tfps.errors import ConfigError
from tfps.launch import resources as _resources
from tfps.slurm import PORT_RANGE

__all__ = ["sbatch_script", "slurm_evaluator_tf_config"]

# Defaults of the counts form (no --spec): the launcher's own.
_DEFAULT_NUM_PS = 2
_DEFAULT_NUM_WORKERS = 2
# Seconds the batch script lets the evaluator's step end on its own once training is done
# (its launcher ends it when the chief's launcher says the chief is done) before ending it.
_EVALUATOR_STOP_S = 30


def _port_base_line(port_base: int | None, per_node: int) -> str:
    if port_base is not None:
        return f"export TFPS_PORT_BASE={port_base}"
    # tfps.slurm.job_port_base, spelled out: jobs sharing a node do not collide.
    slots = (PORT_RANGE[1] + 1 - PORT_RANGE[0]) // per_node
    return (f"export TFPS_PORT_BASE=$(( {PORT_RANGE[0]} + SLURM_JOB_ID % {slots} * {per_node} "
            f"))  # this job's slot")


def _default_mem(sizes: dict, per_node: int, evaluator: bool) -> str:
    # Steps are homogeneous: every task may be the largest role; the evaluator overlaps on
    # the first node.
    mib = per_node * max(sizes[r].memory_mib for r in ("chief", "ps", "worker"))
    mib += sizes["evaluator"].memory_mib if evaluator else 0
    return f"{math.ceil(mib / 1024)}G"


def sbatch_script(*, script: str, script_args: Sequence[str] = (),
                  num_ps: int = _DEFAULT_NUM_PS, num_workers: int = _DEFAULT_NUM_WORKERS,
                  evaluator: bool = False, gpus_per_worker: int = 0,
                  name: str = "tfps-job", nodes: int | None = None,
                  port_base: int | None = None, time: str | None = None,
                  partition: str | None = None, cpus_per_task: int | None = None,
                  mem: str | None = None, model_bytes: int | None = None,
                  max_restarts: int | None = None) -> str:
    """An sbatch script that runs chief, ps and workers as one ``srun`` step.

    tfps reads the step from Slurm's environment (`tfps.Cluster.from_env`): rank 0 is the
    chief, ranks ``1..num_ps`` the ps tasks, the rest workers (SlurmClusterResolver's order),
    each on port ``TFPS_PORT_BASE + local index`` of its node. The script exports
    ``TFPS_NUM_PS`` and ``TFPS_PORT_BASE`` so every task computes the same split; the job's
    exit status is the chief's (module docstring: what is recovered).

    Args:
      script, script_args: the training script and its arguments, as paths on the nodes.
      num_ps, num_workers: task counts (the step has ``1 + num_ps + num_workers`` tasks).
      evaluator: also run an evaluator, as a second one-task step beside the first.
      gpus_per_worker: GPUs per task (Slurm steps are homogeneous; chief and ps hide theirs).
      name: the Slurm job name.
      nodes: nodes to spread the tasks over, evenly (``--ntasks-per-node``); default one
        node per task.
      port_base: first port on each node; default: derived from the job id at run time.
      time, partition: ``#SBATCH --time`` / ``--partition`` when given.
      cpus_per_task: ``--cpus-per-task``; default: the largest role's (`tfps.launch.resources`).
      mem: ``--mem`` (memory per node, Slurm's syntax); default: sized from the roles.
      model_bytes: bytes of all variables and optimizer slots, to size the default ``--mem``.
      max_restarts: the launcher's ``--max-restarts`` for every task; None: its default.

    Raises:
      ConfigError: naming the argument and the value received.
    """
    validate.count("num_ps", num_ps, 1)
    validate.count("num_workers", num_workers, 1)
    validate.count("gpus_per_worker", gpus_per_worker, 0)
    validate.integer("cpus_per_task", cpus_per_task, low=1, high=1024, allow_none=True)
    validate.integer("model_bytes", model_bytes, low=1, allow_none=True)
    validate.integer("max_restarts", max_restarts, low=0, high=10_000, allow_none=True)
    num_tasks = 1 + num_ps + num_workers
    nodes = num_tasks if nodes is None else nodes
    validate.count("nodes", nodes, 1)
    if nodes > num_tasks:
        raise ConfigError(f"Argument `nodes` must be at most the number of tasks "
                          f"({num_tasks}). Received: nodes={nodes}")
    per_node = math.ceil(num_tasks / nodes)
    if port_base is not None and (isinstance(port_base, bool) or not isinstance(port_base, int)
                                  or not 1024 <= port_base <= 65535 - per_node):
        raise ConfigError(f"Argument `port_base` must be an integer in 1024-"
                          f"{65535 - per_node}. Received: port_base={port_base!r}")
    if not isinstance(script, str) or not script:
        raise ConfigError(f"Argument `script` must be the path of the training script. "
                          f"Received: script={script!r}")
    for arg, value in (("name", name), ("time", time), ("partition", partition)):
        if value is not None and (not isinstance(value, str) or not value
                                  or any(c.isspace() or c in "'\"\\$`" for c in value)):
            raise ConfigError(f"Argument `{arg}` must be a non-empty word without spaces or "
                              f"quotes. Received: {arg}={value!r}")
    if mem is not None:
        try:
            _resources.slurm_mem(mem)
        except ConfigError:
            raise validate.fail("mem", mem, "Slurm's memory per node, such as 16G, 4096 "
                                            "(MB) or 0 (all of it)") from None
    sizes = _resources.defaults(num_ps=num_ps, num_workers=num_workers,
                                model_bytes=model_bytes)
    if cpus_per_task is None:
        cpus_per_task = max(math.ceil(float(sizes[r].cpu)) for r in ("chief", "ps", "worker"))
    mem = mem if mem is not None else _default_mem(sizes, per_node, evaluator)
    restarts = ("--max-restarts", str(max_restarts)) if max_restarts is not None else ()
    run = " ".join(shlex.quote(a) for a in (*restarts, script, *map(str, script_args)))
    lines = [
        "#!/bin/bash",
        f"# Generated by tfps-launch --emit slurm: 1 chief + {num_ps} ps + {num_workers} "
        f"worker{'s' if num_workers != 1 else ''}"
        f"{' + 1 evaluator' if evaluator else ''}. Submit with: sbatch THIS_FILE",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks={num_tasks}",
        # At most this many per node, so block distribution spreads the tasks evenly instead
        # of filling the first node's CPUs.
        f"#SBATCH --ntasks-per-node={per_node}",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        f"#SBATCH --mem={mem}",
    ]
    if gpus_per_worker:
        lines.append(f"#SBATCH --gpus-per-task={gpus_per_worker}")
    if time:
        lines.append(f"#SBATCH --time={time}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines.append(f"#SBATCH --output={name}-%j.out")
    hide_gpus = 'export CUDA_VISIBLE_DEVICES=""; ' if gpus_per_worker else ""
    lines += [
        "",
        "# Make tfps-launch available on every node here (e.g. source /path/to/venv/bin/activate).",
        "",
        "# tfps.Cluster.from_env reads this step: rank 0 is the chief, ranks 1..TFPS_NUM_PS the ps",
        "# tasks, the rest workers; each listens on TFPS_PORT_BASE + its index on its node.",
        f"export TFPS_NUM_PS={num_ps}",
        _port_base_line(port_base, per_node),
        *(f"export {k}={v}" for k, v in TASK_ENV.items()),
        "unset TF_CONFIG  # one from the submitting shell would win over Slurm's layout",
        "# Rank 0 runs on this (the first) node and leaves its exit status here.",
        'export TFPS_CHIEF_STATUS="${TMPDIR:-/tmp}/tfps-${SLURM_JOB_ID:-$$}.chief-status"',
        'rm -f "$TFPS_CHIEF_STATUS"',
        "",
    ]
    if evaluator:
        lines += [
            "# The evaluator runs beside the training step, as a one-task step of its own. Its",
            "# TF_CONFIG lists the training cluster (as Kubeflow's does); tfps-launch strips the",
            "# evaluator from what chief, ps and workers see (a coordinator that lists it hangs).",
            "evaluator_tf_config=$(python -c 'from tfps.launch.sbatch import "
            "slurm_evaluator_tf_config as c; print(c())') || exit 1",
            'srun --overlap --nodes=1 --ntasks=1 env TF_CONFIG="$evaluator_tf_config" '
            f"tfps-launch --from-env {run} &",
            "evaluator_pid=$!",
            "",
        ]
    lines += [
        "# --distribution=block: ranks fill the nodes in order, as tfps maps them. Each launcher",
        "# restarts its own task: a worker rejoins; after a lost ps, the chief's launcher",
        "# restarts the chief from its checkpoint once the ps is back. When the chief is done,",
        "# the other launchers hear it on the chief's port and exit 0: the step ends cleanly.",
        "srun --distribution=block --kill-on-bad-exit=0 bash -c '",
        '  if [ "$SLURM_PROCID" -eq 0 ]; then',
        "    trap \"\" TERM  # the launcher ends the chief on SIGTERM; this shell records how",
        f'    {hide_gpus}tfps-launch --from-env "$@"; status=$?',
        '    echo "$status" > "$TFPS_CHIEF_STATUS"; exit "$status"',
        *(['  elif [ "$SLURM_PROCID" -le "$TFPS_NUM_PS" ]; then',
           f'    {hide_gpus}exec tfps-launch --from-env "$@"'] if hide_gpus else []),
        "  fi",
        '  exec tfps-launch --from-env "$@"',
        f"' tfps-task {run}",
        "step_status=$?",
        "",
    ]
    if evaluator:
        lines += [
            "# The evaluator's launcher ends it when the chief is done; should it miss that,",
            f"# its step is ended {_EVALUATOR_STOP_S}s after training.",
            f"for _ in $(seq {_EVALUATOR_STOP_S}); do "
            'kill -0 "$evaluator_pid" 2>/dev/null || break; sleep 1; done',
            'kill "$evaluator_pid" 2>/dev/null',
            'wait "$evaluator_pid"',
            "",
        ]
    lines += [
        "# The job succeeds when the chief does.",
        'if [ -s "$TFPS_CHIEF_STATUS" ]; then',
        '  status=$(cat "$TFPS_CHIEF_STATUS"); rm -f "$TFPS_CHIEF_STATUS"; exit "$status"',
        "fi",
        'echo "tfps: the chief left no exit status (srun exited with $step_status)" >&2',
        'exit "$(( step_status ? step_status : 1 ))"',
    ]
    return "\n".join(lines) + "\n"


def slurm_evaluator_tf_config(environ=None) -> str:
    """The evaluator step's ``TF_CONFIG``: the job's training step, as tfps reads it, plus
    the evaluator (on this host, on a port no training task uses; it runs no server).

    Runs in the batch script, where Slurm describes the allocation (``SLURM_JOB_NODELIST``,
    ``SLURM_TASKS_PER_NODE``, ``SLURM_NTASKS``) that the training step fills.
    """
    import json
    import socket

    from tfps.slurm import read_step

    env = os.environ if environ is None else environ
    step = {"SLURM_PROCID": "0"}
    for step_var, job_var in (("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
                              ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"),
                              ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")):
        if job_var in env:
            step[step_var] = env[job_var]
    for var in ("TFPS_NUM_PS", "TFPS_PORT_BASE", "SLURM_JOB_ID"):
        if var in env:
            step[var] = env[var]
    spec, _ = read_step(step)
    # Listed only (the evaluator runs no server): a port after the first node's tasks.
    chief_port = int(spec["chief"][0].rpartition(":")[2])
    spec["evaluator"] = [f"{socket.gethostname()}:{chief_port + sum(map(len, spec.values()))}"]
    return json.dumps({"cluster": spec, "task": {"type": "evaluator", "index": 0}})
