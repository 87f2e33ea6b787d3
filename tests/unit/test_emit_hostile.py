"""Every setting means what it says (issue 25), for the emitters and what engines write: the
classes of hostile input generated over every engine's flags in tests/hostile_cases.py, run
in-process. tests/unit/test_hostile.py holds them to the common promise (exit 2, one line,
nothing started); here each line must also name the flag (or the field) and the value."""

from __future__ import annotations

import collections
import os
import re

import hostile_cases as H
import pytest

from tfps.emit import cli as emit_cli
from tfps.launch import cli

EMIT_CLASSES = ("emit-values", "emit-repeats", "emit-modes", "engine-env")
CASES = [c for c in H.CASES if c.cls in EMIT_CLASSES]


def test_every_flag_of_every_engine_has_its_kind_of_hostile_values():
    declared = set().union(*(emit_cli.flags(e) for e in emit_cli.ENGINES)) - {"emit"}
    assert declared == set(H.EMIT_FLAGS), "add the new flag to EMIT_FLAGS in hostile_cases.py"
    counts = collections.Counter(c.cls for c in CASES)
    assert set(counts) == set(EMIT_CLASSES) and min(counts.values()) >= 5, counts
    for engine in emit_cli.ENGINES:
        for dest in emit_cli.flags(engine) - {"emit"}:
            valued = H.EMIT_FLAGS[dest][1]
            assert not valued or any(c.id.startswith(f"emit-{engine}-{dest}-") for c in CASES)
            others = [e for e in emit_cli.ENGINES if dest not in emit_cli.flags(e)]
            for other in others:  # an engine's own flag, with another engine
                assert any(c.id == f"emit-{dest}-with-{other}" for c in CASES), (dest, other)


@pytest.fixture(scope="module")
def ports():
    holder, busy = H.hold_busy_port()
    with holder:
        yield H.Ports(busy, H.free_port(), H.free_port())


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_line_names_the_flag_and_the_value(case, tmp_path, monkeypatch, capsys, ports):
    subst = H.substituter(str(tmp_path), ports)
    H.materialize(case, str(tmp_path), subst)
    argv, env = H.argv_and_env(case, subst)
    for name in list(os.environ):
        if H.is_engine_variable(name):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert case.expect, case.id
    for pattern in case.expect:
        assert re.search(pattern, line), (pattern, line)


@pytest.mark.parametrize("argv, line", [
    (["--emit", "volcano", "--image", "i", "--cpu", "ps=2", "--cpu", "ps=4"],
     "--cpu ps=4: ps is already given (--cpu ps=2); give each role once"),
    (["--emit", "trainjob", "--image", "i", "--memory", "evaluator=4Gi"],
     "--memory evaluator=4Gi: the job has no evaluator (add --evaluator, or drop --memory "
     "evaluator=...)"),
    (["--emit", "tfjob", "--image", "i", "--memory", "ps=512Mi"],
     "--memory ps=512Mi: 512 MiB is less than any task needs: at least 1Gi (TensorFlow alone "
     "takes ~580 MiB once imported)"),
    (["--emit", "slurm", "--name", ""],
     "--name '': empty (leave --name out for the default, tfps-<script name>)"),
    (["--emit", "slurm", "--time", "abc"],
     "argument --time: expected Slurm's time limit such as 90 (minutes), 4:00:00 or "
     "2-12:00:00, got 'abc'"),
    (["--emit", "slurm", "--nodes", "1", "--port-base", "65535"],
     "Argument `port_base` must be an integer in 1024-65531 (5 tasks per node, the last on "
     "port_base + 4). Received: port_base=65535"),
])
def test_the_issue_25_refusals_in_full(argv, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main([*argv, "train.py"]) == 2
    assert capsys.readouterr().err == f"tfps-launch: error: {line}\n"
