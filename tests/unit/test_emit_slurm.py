"""`tfps-launch --emit slurm` after issue 24: the request checked against the partition's nodes
(`tfps.emit.slurm_nodes`), preemption (``--requeue``), Slurm's time formats, and one port rule
for the emitter and the launcher. Pure: ``sinfo`` is a stand-in here; the real one answers in
tests/drills/test_slurm_node.py."""

from __future__ import annotations

import os
import stat

import pytest

from tfps import errors
from tfps.cluster import slurm as slurm_step
from tfps.emit import slurm_nodes
from tfps.emit.slurm import SlurmSpec
from tfps.launch import cli
from tfps.launch.config import config_from_args

NODE_8_CPUS = slurm_nodes.Node("vm", 8, 20000, "debug", default=True)


@pytest.fixture
def sinfo(monkeypatch):
    """Sets the nodes `slurm_nodes.query` reports (None: sinfo does not answer)."""
    answer = {"nodes": None}
    monkeypatch.setattr(slurm_nodes, "query", lambda partition=None: answer["nodes"])
    return answer


def directives(text: str) -> dict:
    return dict(line[len("#SBATCH "):].split("=", 1) for line in text.splitlines()
                if line.startswith("#SBATCH "))


def emit(*argv: str) -> str:
    return config_from_args(cli.parse(["--emit", "slurm", *argv])).render()


# ---- the request against the partition's nodes ---------------------------------------------
def test_defaults_are_sized_to_fit_the_node(sinfo):
    sinfo["nodes"] = [NODE_8_CPUS]
    d = directives(emit("--num-ps", "2", "--num-workers", "2", "--nodes", "1", "t.py"))
    # 5 tasks x 4 CPUs and 5 x 4 GiB would never start on 8 CPUs and 20000 MB: cut to fit.
    assert (d["--ntasks-per-node"], d["--cpus-per-task"], d["--mem"]) == ("5", "1", "20000M")


def test_without_sinfo_the_defaults_are_the_roles(sinfo):
    d = directives(emit("--num-ps", "2", "--num-workers", "2", "--nodes", "1", "t.py"))
    assert (d["--cpus-per-task"], d["--mem"]) == ("4", "20G")


def test_defaults_that_fit_are_kept(sinfo):
    sinfo["nodes"] = [slurm_nodes.Node("big", 64, 256000, "debug", True), NODE_8_CPUS]
    d = directives(emit("--nodes", "1", "t.py"))
    assert (d["--cpus-per-task"], d["--mem"]) == ("4", "20G")


def test_a_request_no_node_can_meet_is_one_line_exit_2(sinfo, capsys):
    sinfo["nodes"] = [NODE_8_CPUS]
    assert cli.main(["--emit", "slurm", "--nodes", "1", "--cpus-per-task", "4", "t.py"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("tfps-launch: error: --emit slurm: no node of the default partition can ever "
                   "run this job: it asks 5 tasks x 4 CPUs and at least 5120 MB on each of 1 "
                   "node; the largest is vm (8 CPUs, 20000 MB) (sinfo)\n")


@pytest.mark.parametrize("argv, needle", [
    (["--nodes", "1", "--mem", "30000"], "5 tasks x at least 1 CPU and 30000 MB on each of 1 "
                                          "node; the largest is vm (8 CPUs, 20000 MB)"),
    (["--num-workers", "10", "--nodes", "1"], "13 tasks x at least 1 CPU"),
    (["--nodes", "2"], "no 2 nodes of the default partition"),
])
def test_what_cannot_fit_is_named(sinfo, argv, needle, capsys):
    sinfo["nodes"] = [NODE_8_CPUS]
    assert cli.main(["--emit", "slurm", *argv, "t.py"]) == 2
    assert needle in capsys.readouterr().err


def test_a_partition_sinfo_does_not_list_is_refused(sinfo, capsys):
    sinfo["nodes"] = [NODE_8_CPUS]
    assert cli.main(["--emit", "slurm", "--partition", "gpu", "t.py"]) == 2
    assert capsys.readouterr().err == ("tfps-launch: error: --partition 'gpu': sinfo lists no "
                                       "node in it\n")


def test_the_nodes_of_several_sizes_and_partitions(sinfo):
    nodes = slurm_nodes.parse("a|64|1000|p\nb|8|200000|p\nc|96|512000|big*\nx|y|z|p\n")
    assert [n.name for n in nodes] == ["a", "b", "c"]
    assert [n.name for n in slurm_nodes.in_partition(nodes, None)] == ["c"]
    # Each node has a large dimension; together they fit 1 CPU and 1000 MB per node.
    assert slurm_nodes.fit(slurm_nodes.in_partition(nodes, "p"), nodes=2, tasks_per_node=5,
                           cpus_per_task=None, mem_mib=None, default_cpus=4,
                           default_mib=20480, least_mib=500) == (1, 1000)


def test_query_reads_sinfo_per_node_and_survives_its_failures(tmp_path, monkeypatch):
    fake = tmp_path / "sinfo"
    fake.write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "args") + "\n"
                    "printf 'vm|8|20000|debug*\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    assert slurm_nodes.query("debug") == [NODE_8_CPUS]
    assert (tmp_path / "args").read_text().split() == ["-h", "-N", "-o", "%N|%c|%m|%P", "-p",
                                                       "debug"]
    fake.write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact' >&2\nexit 1\n")
    assert slurm_nodes.query() is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert slurm_nodes.query() is None


def test_bad_flags_are_refused_before_sinfo_is_asked(monkeypatch, capsys):
    def no_sinfo(partition=None):
        raise AssertionError("sinfo asked before the flags were checked")
    monkeypatch.setattr(slurm_nodes, "query", no_sinfo)
    assert cli.main(["--emit", "slurm", "--nodes", "1", "--mem", "1G", "t.py"]) == 2
    assert "`mem` must be at least 5120 MB" in capsys.readouterr().err


# ---- preemption: --requeue -----------------------------------------------------------------
def test_requeue_asks_for_the_notice_and_requeues_after_the_chief_exits_138(sinfo):
    lines = emit("--requeue", "--nodes", "1", "train.py", "--steps", "10").splitlines()
    assert "#SBATCH --requeue" in lines and "#SBATCH --signal=B:USR1@90" in lines
    assert "#SBATCH --open-mode=append" in lines
    assert "trap tfps_preempted USR1" in lines
    # The batch shell waits on srun in the background: a trapped signal ends `wait` early.
    assert "' tfps-task train.py --steps 10 &" in lines
    assert ('while :; do wait "$step_pid"; step_status=$?; kill -0 "$step_pid" 2>/dev/null || '
            'break; done') in lines
    # Rank 0 writes its launcher's pid; the trap sends SIGUSR1 there.
    assert '    echo "$!" > "$TFPS_CHIEF_PID"; wait "$!"; status=$?' in lines
    assert '  [ -s "$TFPS_CHIEF_PID" ] && kill -USR1 "$(cat "$TFPS_CHIEF_PID")" 2>/dev/null' \
        in lines
    # 138: requeued; 130, 137, 143 (retryable): requeued at most 3 times; anything else fails.
    assert '    138) why="the chief checkpointed and exited 138 (preempted)" ;;' in lines
    assert ('    130|137|143) [ "${SLURM_RESTART_COUNT:-0}" -lt 3 ] && why="the chief exited '
            '$status (retryable)" ;;') in lines
    assert '    scontrol requeue "$SLURM_JOB_ID"  # Slurm ends this script; the job runs again' \
        in lines


def test_without_requeue_the_script_has_no_trap(sinfo):
    text = emit("--nodes", "1", "train.py")
    assert "USR1" not in text and "requeue" not in text and "--open-mode" not in text


# ---- time limits, ports, memory ------------------------------------------------------------
@pytest.mark.parametrize("text", ["90", "0", "30:00", "4:00:00", "2-12", "2-12:30",
                                  "2-12:30:00", "UNLIMITED", "infinite", "100:90"])
def test_slurm_time_formats_are_taken(text):
    assert slurm_nodes.check_time(text) == text


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "-2", "1.5", "2-", "-2", "1d", "1:", ":30",
                                  "2-1:2:3:4", "１０", " 90", "90 ", "", "-1:00"])
def test_other_times_are_refused_at_emit_not_at_submit(text, capsys):
    assert cli.main(["--emit", "slurm", f"--time={text}", "t.py"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfps-launch: error: argument --time: expected Slurm's time limit "
                          "such as 90 (minutes), 4:00:00 or 2-12:00:00, got ")
    assert repr(text) in err


@pytest.mark.parametrize("per_node", [2, 3, 5, 11])
@pytest.mark.parametrize("base", [80, 1023, 1024, 20000, 65520, 65525, 65531, 65535])
def test_the_emitter_and_the_launcher_take_the_same_port_bases(per_node, base):
    """--emit slurm --port-base and TFPS_PORT_BASE read by `tfps-launch --from-env`: one rule."""
    try:
        SlurmSpec(script="t.py", num_ps=1, num_workers=per_node * 2 - 2, nodes=2,
                  port_base=base)
        emitted = True
    except errors.ConfigError:
        emitted = False
    env = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": str(2 * per_node),
           "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x2)",
           "TFPS_NUM_PS": "1", "TFPS_PORT_BASE": str(base)}
    try:
        slurm_step.read_step(env)
        launched = True
    except errors.ClusterSpecError:
        launched = False
    assert emitted == launched == (1024 <= base <= 65536 - per_node)


def test_memory_per_node_has_a_floor_per_task(sinfo, capsys):
    assert cli.main(["--emit", "slurm", "--nodes", "1", "--evaluator", "--mem", "5G",
                     "t.py"]) == 2
    assert ("`mem` must be at least 6144 MB: 6 tasks on a node, each needing 1024 MB, or 0 "
            "(all of it). Received: mem='5G'") in capsys.readouterr().err
    assert directives(emit("--nodes", "1", "--mem", "0", "t.py"))["--mem"] == "0"
