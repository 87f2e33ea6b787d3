"""Hostile inputs to `tfps-launch` and `python -m tfps.server`, as data (issue 16).

The promise for every case: exit code 2, exactly one line on stderr (``<prog>: error: ...``),
no traceback, within 30 s, nothing started (no task process, no log directory) and nothing
left behind. Two runners use this table: ``tests/unit/test_hostile.py`` calls
`tfps.launch.cli.main` / `tfps.server.main` in-process (no subprocess, no TensorFlow), and
``tests/integration/test_hostile_processes.py`` runs the real executables as processes.

A case is a `Case`: ``argv`` for the program, ``env`` added to a clean environment (every
``TF_CONFIG``, ``SLURM*`` and ``TFPS_*`` variable is removed first), ``files`` written into the
case's own directory, which is also the working directory. Placeholders in argv, env values
and text files: ``{d}`` the case directory, ``{chief}`` a trivial chief script there,
``{busy}`` a port the runner holds (listening), ``{free}`` / ``{free2}`` ports that are free.
A file's content is text, bytes, a zero-argument callable returning either, or a dict:
``{"fifo": True}``, ``{"dir": True}``, ``{"symlink": target}``, ``{"mode": 0o755, "data": ...}``.

The classes are those of issue 16, and issue 25's (``emit-values``, ``emit-repeats``,
``emit-modes``, ``engine-env``: generated over every engine's flags, each case naming the flag
and the value it expects in the line, which ``tests/unit/test_emit_hostile.py`` checks);
``tests/unit/test_hostile.py`` checks that each class has several cases. Issue 25 adds
``export-flags`` and ``export-files`` (generated over ``python -m tfps.export``'s flags and the
files it reads) and `API_CASES`, the Python API's classes (``api-absurd``, ``api-ignored``,
``api-no-counterpart``, ``api-late``), generated over every public entry point that can be
checked without TensorFlow and run by ``tests/unit/test_api_hostile.py``. Most cases of
issue 16 come from a census of 330 hostile inputs run against the code before the issue; the
ones that still broke the promise afterwards are marked ``census-break``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import stat
from collections.abc import Callable

CLASSES = ("parser", "numbers", "hosts", "flags", "spec-shapes", "scripts", "env",
           "launch-time", "server", "export", "emit-values", "emit-repeats", "emit-modes",
           "engine-env")
# A trivial chief: never runs (every case is refused first), but must be a runnable script.
CHIEF = "print('chief ran', flush=True)\n"
# The longest a case may take, start to exit, the process's own start included.
MAX_WALL_S = 30.0


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    cls: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, object], ...] = ()
    program: str = "launch"  # or "server", "export"
    note: str = ""
    # As root, file modes do not stop reads (CAP_DAC_OVERRIDE): the in-process runner skips
    # the case there; the process runner drops those capabilities with setpriv.
    needs_no_dac_override: bool = False
    # Regular expressions the error line must match, each (the flag or field, the value):
    # tests/unit/test_emit_hostile.py checks them.
    expect: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.id


CASES: list[Case] = []


def case(id, cls, argv, *, env=None, files=None, program="launch", note="",
         needs_no_dac_override=False, expect=()):
    assert cls in CLASSES, cls
    assert all(c.id != id for c in CASES), id
    CASES.append(Case(id, cls, tuple(argv), tuple((env or {}).items()),
                      tuple((files or {}).items()), program, note, needs_no_dac_override,
                      tuple(expect)))


def spec(ps=("localhost:1",), worker=("localhost:2",), chief=("localhost:3",), **extra) -> str:
    """A YAML spec (flow style, every address quoted); a role given as None is left out."""
    roles = {"chief": chief, "ps": ps, "worker": worker, **extra}
    return "".join(f"{k}: {json.dumps(list(v))}\n" for k, v in roles.items() if v is not None)


def tf_config(cluster=None, task=None) -> str:
    cluster = cluster or {"chief": ["localhost:3"], "ps": ["localhost:1"],
                          "worker": ["localhost:2"]}
    return json.dumps({"cluster": cluster, "task": task or {"type": "worker", "index": 0}})


def tf_index(raw: str) -> str:
    """A TF_CONFIG whose task index is the raw JSON text `raw`."""
    return ('{"cluster": {"chief": ["localhost:3"], "ps": ["localhost:1"], '
            '"worker": ["localhost:2", "localhost:4"]}, '
            '"task": {"type": "worker", "index": ' + raw + '}}')


def _bomb(depth=9, width=9) -> str:
    """A YAML flow list whose anchors b0..b8 each hold 9 aliases of the previous: 9**8 leaves."""
    parts = ["&b0 [lol]"] + [f"&b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]"
                             for i in range(1, depth)]
    return "[" + ", ".join(parts) + "]"


SPEC = "{d}/spec.yaml"
DRY = "--dry-run"
SLURM = {"SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NODELIST": "n1",
         "SLURM_STEP_TASKS_PER_NODE": "3", "TFPS_NUM_PS": "1"}

# ================================================================ parsers that recurse or expand
C = "parser"
case("yaml-5000-unclosed-brackets", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": lambda: "[" * 5000}, note="was a 3000-line RecursionError")
case("yaml-deep-map", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": lambda: "{a: " * 5000 + "1" + "}" * 5000})
case("yaml-deep-block-sequences", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": lambda: "".join(" " * i + "-\n" for i in range(3000))})
case("json-deep-list", C, ["--spec", "{d}/spec.json", "{chief}"],
     files={"spec.json": lambda: "[" * 5000 + "]" * 5000})
case("yaml-alias-bomb-as-chief", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": lambda: "evaluator: " + _bomb() + "\nchief: [*b8]\n"
                                 "ps: [localhost:1]\nworker: [localhost:2]\n"},
     note="the message used to format the whole expanded value (398 MB)")
case("yaml-alias-bomb-in-ps-mapping", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": lambda: "evaluator: " + _bomb() + "\nps: {k: *b8}\n"
                                 "worker: [localhost:2]\n"})
case("yaml-alias-bomb-top-level", C, ["--spec", SPEC, "{chief}"], files={"spec.yaml": _bomb})
case("spec-dev-zero", C, ["--spec", "/dev/zero", "{chief}"], note="was MemoryError")
case("spec-dev-urandom", C, ["--spec", "/dev/urandom", "{chief}"])
case("spec-fifo", C, ["--spec", "{d}/fifo.yaml", "{chief}"], files={"fifo.yaml": {"fifo": True}},
     note="open() of a FIFO without a writer used to block forever")
case("spec-50mb-yaml", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": lambda: "ps: [localhost:1]\nchief: [localhost:3]\nworker:\n" + "".join(
         f"- h{i}.example:{1 + i}\n" for i in range(50_000)) * 40},
     note="50 MB: PyYAML ran for minutes")
case("spec-50mb-json", C, ["--spec", "{d}/spec.json", "{chief}"],
     files={"spec.json": lambda: json.dumps({"ps": ["localhost:1"], "worker": [
         f"h{i}.example:{1 + i}" for i in range(50_000)] * 40})})
case("spec-control-characters", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": "ps: [localhost:1]\x07\x1b[31m\nworker: [localhost:2]\n"},
     note="census-break: PyYAML's ReaderError escaped (exit 1, traceback)")
case("spec-binary-garbage", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": lambda: random.Random(1).randbytes(4096)})
case("spec-utf16", C, ["--spec", SPEC, "{chief}"], files={"spec.yaml": spec().encode("utf-16")})
case("spec-is-a-directory", C, ["--spec", "{d}", "{chief}"])
case("spec-missing", C, ["--spec", "{d}/nope.yaml", "{chief}"])
case("spec-empty-path", C, ["--spec", "", DRY, "{chief}"])
case("spec-path-5000-chars", C, ["--spec", "{d}/" + "x" * 5000, "{chief}"],
     note="census-break: the path was echoed whole (a 5 KB line)")
case("spec-python-tag", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": "ps: !!python/object/apply:os.system ['true']\n"})
case("tfconfig-5000-nested-lists", C, ["--from-env", "{chief}"],
     env={"TF_CONFIG": "[" * 5000 + "]" * 5000})
case("tfconfig-deep-task", C, ["--from-env", "{chief}"],
     env={"TF_CONFIG": '{"cluster": {"ps": ["localhost:1"], "worker": ["localhost:2"]}, '
                       '"task": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"})

# ================================================================ numbers
C = "numbers"
for cid, port in [("fullwidth", "８０８０"), ("underscore", "8_080"), ("spaces", " 8080 "),
                  ("plus", "+8080"), ("arabic-indic", "٨٠٨٠"), ("zero", "0"),
                  ("leading-zero", "08080"), ("huge", "1" + "0" * 30), ("hex", "0x1f90")]:
    case(f"spec-port-{cid}", C, ["--spec", SPEC, DRY, "{chief}"],
         files={"spec.yaml": spec(ps=[f"localhost:{port}"])},
         note="census-break: a leading zero passed" if cid == "leading-zero" else "")
for cid, value in [("underscore", "1_0"), ("fullwidth", "２"), ("plus", "+2"), ("huge", "99999"),
                   ("5000-digits", "9" * 5000), ("over-local-max", "65")]:
    case(f"num-ps-{cid}", C, ["--num-ps", value, DRY, "{chief}"])
case("num-workers-10e30", C, ["--num-workers", str(10 ** 30), DRY, "{chief}"])
case("gpus-per-worker-1e9", C, ["--gpus-per-worker", str(10 ** 9), DRY, "{chief}"],
     note="used to build a 10**9-entry CUDA_VISIBLE_DEVICES")
case("gpus-per-worker-fullwidth", C, ["--gpus-per-worker", "１", DRY, "{chief}"])
for cid, value in [("1e308", "1e308"), ("nan", "nan"), ("inf", "inf"), ("zero", "0"),
                   ("fullwidth", "５"), ("400-digits", "9" * 400)]:
    case(f"grace-period-{cid}", C, ["--grace-period", value, DRY, "{chief}"])
for cid, value in [("10e30", str(10 ** 30)), ("minus-zero", "-0"), ("underscore", "1_0")]:
    case(f"max-restarts-{cid}", C, ["--max-restarts", value, DRY, "{chief}"])
for cid, raw in [("0.9", "0.9"), ("Infinity", "Infinity"), ("1e400", "1e400"), ("true", "true"),
                 ("minus-1", "-1"), ("10e30", str(10 ** 30)), ("fullwidth-string", '"１"')]:
    case(f"tfconfig-index-{cid}", C, ["--from-env", DRY, "{chief}"],
         env={"TF_CONFIG": tf_index(raw)},
         note="0.9 used to be worker 0; Infinity an OverflowError" if cid == "0.9" else "")
for cid, value in [("1e400s", "worker:0@1e400s"), ("fullwidth-time", "worker:0@１s"),
                   ("400-digits", "worker:0@" + "9" * 400 + "s"), ("negative", "worker:0@-1s"),
                   ("fullwidth-index", "worker:０@1s"), ("eight-days", "worker:0@11520m")]:
    case(f"inject-fault-{cid}", C, ["--inject-fault", value, DRY, "{chief}"])

# ================================================================ hosts
C = "hosts"
case("two-names-for-one-address", C, ["--spec", SPEC, DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["localhost:22221"], worker=["127.0.0.1:22221"],
                              chief=["localhost:22223"])},
     note="used to pass, then fail after 3 restarts with an EagerService context clash")
case("ipv6-and-ipv4-loopback-one-port", C, ["--spec", SPEC, DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["[::1]:22221"], worker=["127.0.0.1:22221"])})
case("localhost-in-capitals-one-port", C, ["--spec", SPEC, "--network", "host", DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["localhost:{free}"], worker=["LOCALHOST:{free}"],
                              chief=["localhost:{free2}"])})
case("host-network-127.1-and-localhost", C, ["--spec", SPEC, "--network", "host", DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["localhost:{free}"], worker=["127.1:{free}"],
                              chief=["localhost:{free2}"])},
     note="two spellings the resolver maps to one socket")
case("host-with-space", C, ["--spec", SPEC, "--network", "host", DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["local host:1"])})
case("host-with-space-one-task", C, ["--spec", SPEC, "--task", "ps:0", DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["local host:1"])})
case("host-with-nul", C, ["--spec", SPEC, "--network", "host", DRY, "{chief}"],
     files={"spec.yaml": 'chief: ["localhost:3"]\nps: ["local\\0host:1"]\n'
                         'worker: ["localhost:2"]\n'})
case("host-with-newline", C, ["--spec", SPEC, "--network", "host", DRY, "{chief}"],
     files={"spec.yaml": 'chief: ["localhost:3"]\nps: ["localhost\\n:1"]\n'
                         'worker: ["localhost:2"]\n'})
case("host-70000-chars", C, ["--spec", SPEC, "--network", "host", DRY, "{chief}"],
     files={"spec.yaml": lambda: spec(ps=["a" * 70000 + ":1"])})
case("host-70000-chars-doctor", C, ["--doctor", "--spec", SPEC],
     files={"spec.yaml": lambda: spec(ps=["a" * 70000 + ":1"])})
case("host-fullwidth-localhost", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": spec(ps=["ｌｏｃａｌｈｏｓｔ:1"])})
case("ipv6-without-brackets", C, ["--spec", SPEC, DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["::1:22221"])})
case("ipv6-unbalanced-bracket", C, ["--spec", SPEC, DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["[::1:22221"])})
case("two-ports", C, ["--spec", SPEC, "--network", "host", DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["localhost:1:2"])})
case("empty-host", C, ["--spec", SPEC, "{chief}"], files={"spec.yaml": spec(ps=[":1"])})
case("unresolvable-host-all-here", C, ["--spec", SPEC, "--network", "host", DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["no-such-host.invalid:22221"])},
     note="census-break: every task runs here, yet a host is not this machine")
case("not-loopback-in-private-network", C, ["--spec", SPEC, DRY, "{chief}"],
     files={"spec.yaml": spec(ps=["10.1.2.3:22221"])})

# ================================================================ flags a mode would ignore
C = "flags"
case("emit-spec-and-num-ps", C,
     ["--emit", "tfjob", "--spec", SPEC, "--num-ps", "5", "--image", "r/i:1", "{chief}"],
     files={"spec.yaml": spec()}, note="used to exit 0 with --num-ps ignored")
case("emit-inject-fault", C, ["--emit", "slurm", "--inject-fault", "garbage", "{chief}"])
case("emit-task", C, ["--emit", "slurm", "--task", "worker:0", "{chief}"])
case("emit-from-env", C, ["--emit", "slurm", "--from-env", "{chief}"],
     env={"TF_CONFIG": "garbage"})
case("emit-dry-run", C, ["--emit", "slurm", DRY, "{chief}"])
case("emit-network", C, ["--emit", "tfjob", "--image", "r/i:1", "--network", "host",
                         "{chief}"])
case("emit-and-doctor", C, ["--emit", "slurm", "--doctor", "{chief}"])
case("doctor-task", C, ["--doctor", "--spec", SPEC, "--task", "ps:0"], files={"spec.yaml": spec()})
case("doctor-from-env", C, ["--doctor", "--from-env"], env={"TF_CONFIG": "garbage"})
case("doctor-script", C, ["--doctor", "{chief}"])
case("doctor-gpus", C, ["--doctor", "--gpus-per-worker", "3"])
case("task-without-spec", C, ["--task", "worker:0", "{chief}"])
case("task-empty", C, ["--spec", SPEC, "--task", "", DRY, "{chief}"], files={"spec.yaml": spec()},
     note="used to run every task of the spec")
case("task-not-in-spec", C, ["--spec", SPEC, "--task", "worker:7", DRY, "{chief}"],
     files={"spec.yaml": spec()})
case("from-env-and-spec", C, ["--from-env", "--spec", SPEC, DRY, "{chief}"],
     env={"TF_CONFIG": tf_config()}, files={"spec.yaml": spec()})
case("from-env-and-network", C, ["--from-env", "--network", "private", DRY, "{chief}"],
     env={"TF_CONFIG": tf_config()})
case("spec-and-counts", C, ["--spec", SPEC, "--num-workers", "3", DRY, "{chief}"],
     files={"spec.yaml": spec()})
case("log-dir-empty", C, ["--log-dir", "", DRY, "{chief}"],
     note="census-break: used the default directory silently")
case("model-bytes-without-doctor", C, ["--model-bytes", "6GB", DRY, "{chief}"])
case("unknown-flag", C, ["--num-servers", "2", "{chief}"])

# ================================================================ spec shapes
C = "spec-shapes"
_BASE = {"chief": "chief: [localhost:3]\n", "ps": "ps: [localhost:1]\n",
         "worker": "worker: [localhost:2]\n"}
for cid, text in [("chief-false", "chief: false\n"), ("chief-0", "chief: 0\n"),
                  ("chief-empty-string", "chief: ''\n"), ("ps-null", "ps: null\n"),
                  ("ps-empty-map", "ps: {}\n"), ("worker-string", "worker: 'h:1'\n"),
                  ("worker-int", "worker: [5]\n"), ("worker-nested-list", "worker: [[h:2]]\n"),
                  ("two-evaluators", "evaluator: [localhost:7, localhost:8]\n"),
                  ("role-in-capitals", "PS: [localhost:9]\n"), ("unknown-key", "foo: 1\n")]:
    role = text.split(":")[0]
    body = "".join(text if r == role else t for r, t in _BASE.items())
    if role not in _BASE:
        body += text
    case(f"shape-{cid}", C, ["--spec", SPEC, DRY, "{chief}"], files={"spec.yaml": body},
         note="'chief: false' used to mean no chief: ps and workers ran forever"
         if cid == "chief-false" else "")
case("shape-duplicate-ps-key", C, ["--spec", SPEC, DRY, "{chief}"],
     files={"spec.yaml": "chief: [localhost:3]\nps: [localhost:1]\nps: [localhost:5]\n"
                         "worker: [localhost:2]\n"}, note="used to keep the last silently")
case("shape-duplicate-key-json", C, ["--spec", "{d}/spec.json", DRY, "{chief}"],
     files={"spec.json": '{"chief": ["localhost:3"], "ps": ["localhost:1"], '
                         '"ps": ["localhost:5"], "worker": ["localhost:2"]}'})
case("shape-tf-config-with-a-role-beside-cluster", C, ["--spec", SPEC, DRY, "{chief}"],
     files={"spec.yaml": "cluster: {chief: [localhost:3], ps: [localhost:1], "
                         "worker: [localhost:2]}\nps: [localhost:9]\n"},
     note="census-break: roles beside 'cluster' were dropped silently")
case("shape-cluster-null", C, ["--spec", SPEC, "{chief}"], files={"spec.yaml": "cluster: ~\n"})
case("shape-no-chief", C, ["--spec", SPEC, DRY, "{chief}"],
     files={"spec.yaml": "ps: [localhost:1]\nworker: [localhost:2]\n"})
case("shape-two-documents", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": spec() + "---\n" + spec()})
case("shape-top-level-list", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": "- localhost:1\n- localhost:2\n"})
case("shape-empty-file", C, ["--spec", SPEC, "{chief}"], files={"spec.yaml": ""})
case("shape-unhashable-key", C, ["--spec", SPEC, "{chief}"],
     files={"spec.yaml": "? [a, b]\n: [localhost:1]\n"})

# ================================================================ scripts that cannot run
C = "scripts"
case("script-executable-without-shebang", C, ["{d}/noshebang"],
     files={"noshebang": {"mode": 0o755, "data": "print('hi')\n"}},
     note="used to start ps and workers, then fail")
case("script-shebang-to-missing-interpreter", C, ["{d}/badshebang"],
     files={"badshebang": {"mode": 0o755, "data": "#!/nonexistent/python\nprint('hi')\n"}},
     note="used to report the script itself as missing")
case("script-env-shebang-to-missing-interpreter", C, ["{d}/envshebang"],
     files={"envshebang": {"mode": 0o755,
                           "data": "#!/usr/bin/env no-such-interpreter-tfps\nprint('hi')\n"}})
case("script-shebang-to-directory", C, ["{d}/dirshebang"],
     files={"dirshebang": {"mode": 0o755, "data": "#!/tmp\nprint('hi')\n"}})
case("script-not-executable", C, ["{d}/noexec"],
     files={"noexec": {"mode": 0o644, "data": "#!/bin/sh\n"}})
case("script-directory", C, ["{d}/adir"], files={"adir": {"dir": True}})
case("script-directory-named-py", C, ["{d}/adir.py"], files={"adir.py": {"dir": True}})
case("script-fifo", C, ["{d}/fifo.py"], files={"fifo.py": {"fifo": True}})
case("script-dev-null", C, ["/dev/null"])
case("script-broken-symlink", C, ["{d}/link.py"], files={"link.py": {"symlink": "/nonexistent"}})
case("script-missing", C, ["{d}/missing.py"])
case("script-empty-name", C, [""])
case("script-none", C, ["--num-ps", "1"])
case("script-binary-py", C, ["{d}/garbage.py"],
     files={"garbage.py": lambda: b"\x00" + random.Random(3).randbytes(511)},
     note="census-break: the cluster started and the chief exited 1")
case("script-syntax-error", C, ["{d}/broken.py"], files={"broken.py": "def f(:\n    pass\n"})
case("script-unreadable-py", C, ["{d}/secret.py"],
     files={"secret.py": {"mode": 0o200, "data": "print('hi')\n"}},
     needs_no_dac_override=True)
case("script-unreadable-executable", C, ["{d}/secret.sh"],
     files={"secret.sh": {"mode": 0o311, "data": "#!/bin/sh\necho hi\n"}},
     needs_no_dac_override=True)

# ================================================================ environment (--from-env)
C = "env"
for cid, text in [("not-json", "{cluster: x"), ("null", "null"), ("blank", "   "),
                  ("list", "[1, 2]"), ("invalid-utf8", b'{"c": \xff}'.decode("utf-8",
                                                                           "surrogateescape")),
                  ("duplicate-task-key", '{"cluster": {"ps": ["localhost:1"], "worker": '
                   '["localhost:2"]}, "task": {"type": "ps", "index": 0}, "task": {"type": '
                   '"worker", "index": 0}}'),
                  ("extra-top-level-role", '{"cluster": {"ps": ["localhost:1"], "worker": '
                   '["localhost:2"]}, "task": {"type": "worker", "index": 0}, '
                   '"ps": ["evil:1"]}'),
                  ("type-in-capitals", tf_config(task={"type": "PS", "index": 0})),
                  ("type-null", tf_config(task={"type": None, "index": 0})),
                  ("task-not-in-cluster", tf_config(task={"type": "worker", "index": 3}))]:
    case(f"tfconfig-{cid}", C, ["--from-env", DRY, "{chief}"], env={"TF_CONFIG": text},
         note="census-break: a role beside 'cluster' was dropped"
         if cid == "extra-top-level-role" else "")
for cid, env in [("procid-abc", {"SLURM_PROCID": "abc", **SLURM}),
                 ("procid-only", {"SLURM_PROCID": "0"}),
                 ("procid-negative", {"SLURM_PROCID": "-1", **SLURM}),
                 ("nodelist-10e8-hosts", {"SLURM_PROCID": "0", **SLURM,
                                          "SLURM_STEP_NODELIST": "n[1-99999999]"}),
                 ("tasks-per-node-huge", {"SLURM_PROCID": "0", **SLURM,
                                          "SLURM_STEP_TASKS_PER_NODE": "1(x999999999)"}),
                 ("port-base-fullwidth", {"SLURM_PROCID": "2", **SLURM,
                                          "TFPS_PORT_BASE": "８８８８"}),
                 ("num-ps-underscore", {"SLURM_PROCID": "2", **SLURM, "TFPS_NUM_PS": "1_0"}),
                 ("num-ps-missing", {"SLURM_PROCID": "2", **{k: v for k, v in SLURM.items()
                                                             if k != "TFPS_NUM_PS"}})]:
    case(f"slurm-{cid}", C, ["--from-env", DRY, "{chief}"], env=env,
         note="used to import all of TensorFlow first (5-16 s, 6 log lines)"
         if cid == "procid-abc" else "")
case("from-env-nothing-set", C, ["--from-env", "{chief}"])
case("legacy-keras-0-and-a-bad-flag", C, ["--num-ps", "0", "{chief}"],
     env={"TF_USE_LEGACY_KERAS": "0"},
     note="census-break: import tfps added a 2-line KerasBindingWarning to the launcher")

# ================================================================ launch time (before any task)
C = "launch-time"
case("log-dir-is-a-file", C, ["--num-ps", "1", "--num-workers", "1", "--log-dir", "{d}/afile",
                              "{chief}"], files={"afile": "x"})
case("log-dir-chief-log-is-a-directory", C,
     ["--num-ps", "1", "--num-workers", "1", "--log-dir", "{d}/logs", "{chief}"],
     files={"logs/chief.log": {"dir": True}},
     note="census-break: traceback after ps and worker had started")
case("log-dir-ps-log-is-a-directory", C,
     ["--num-ps", "1", "--num-workers", "1", "--log-dir", "{d}/logs", "{chief}"],
     files={"logs/ps-0.log": {"dir": True}}, note="census-break: traceback")
case("log-dir-launcher-log-is-a-directory", C,
     ["--num-ps", "1", "--num-workers", "1", "--log-dir", "{d}/logs", "{chief}"],
     files={"logs/launcher.log": {"dir": True}})
case("port-in-use-host-network", C, ["--spec", SPEC, "--network", "host", "--log-dir",
                                     "{d}/logs", "{chief}"],
     files={"spec.yaml": spec(ps=["localhost:{busy}"], worker=["localhost:{free}"],
                              chief=["localhost:{free2}"])})
case("port-in-use-one-task", C, ["--spec", SPEC, "--task", "ps:0", "--log-dir", "{d}/logs",
                                 "{chief}"],
     files={"spec.yaml": spec(ps=["localhost:{busy}"])})

# ================================================================ the task server
C = "server"
S = "server"
case("server-no-environment", C, [], program=S)
case("server-tfconfig-deep", C, [], program=S, env={"TF_CONFIG": "[" * 5000 + "]" * 5000})
case("server-tfconfig-index-0.9", C, [], program=S, env={"TF_CONFIG": tf_index("0.9")},
     note="used to serve worker 0")
case("server-tfconfig-chief", C, [], program=S,
     env={"TF_CONFIG": tf_config(task={"type": "chief", "index": 0})})
case("server-spec-deep", C, ["--spec", SPEC, "--task", "ps:0"], program=S,
     files={"spec.yaml": lambda: "[" * 5000})
case("server-spec-without-task", C, ["--spec", SPEC], program=S, files={"spec.yaml": spec()})
case("server-task-without-spec", C, ["--task", "ps:0"], program=S,
     env={"TF_CONFIG": tf_config()}, note="used to serve TF_CONFIG's worker:0 instead")
case("server-task-fullwidth-index", C, ["--spec", SPEC, "--task", "worker:０"], program=S,
     files={"spec.yaml": spec()})
case("server-unknown-flag", C, ["--bogus"], program=S)
case("server-port-in-use", C, ["--spec", SPEC, "--task", "ps:0"], program=S,
     files={"spec.yaml": spec(ps=["localhost:{busy}"])},
     note="census-break: 18 s of TF import and 10 lines of TF logs before the error")
case("server-slurm-garbage", C, [], program=S, env={"SLURM_PROCID": "x"})

# ================================================================ python -m tfps.export
C = "export"
E = "export"
# A training run's directory with a checkpoint record and its index (never read: every case
# is refused before TensorFlow), and a directory that passes for a SavedModel.
RUN = {"md/checkpoints/checkpoint": 'model_checkpoint_path: "ckpt-1"\n',
       "md/checkpoints/ckpt-1.index": ""}
OK = ["--model_dir", "{d}/md", "--model", "{chief}:build"]
case("export-no-arguments", C, [], program=E)
case("export-model-dir-missing", C, ["--model_dir", "{d}/nope", "--model", "{chief}:build",
                                     "--out", "{d}/out"], program=E)
case("export-model-dir-is-a-file", C, ["--model_dir", "{chief}", "--model", "{chief}:build",
                                       "--out", "{d}/out"], program=E)
case("export-no-checkpoint", C, [*OK, "--out", "{d}/out"], program=E,
     files={"md": {"dir": True}})
case("export-checkpoint-record-names-a-missing-one", C, [*OK, "--out", "{d}/out"], program=E,
     files={"md/checkpoints/checkpoint": 'model_checkpoint_path: "ckpt-7"\n'})
case("export-checkpoint-record-garbage", C, [*OK, "--out", "{d}/out"], program=E,
     files={"md/checkpoint": lambda: bytes(range(256)) * 64})
case("export-model-without-function", C, ["--model_dir", "{d}/md", "--model", "{chief}",
                                          "--out", "{d}/out"], program=E, files=RUN)
case("export-model-file-missing", C, ["--model_dir", "{d}/md", "--model", "{d}/no.py:build",
                                      "--out", "{d}/out"], program=E, files=RUN)
case("export-model-not-a-module-name", C, ["--model_dir", "{d}/md", "--model", "a b:build",
                                           "--out", "{d}/out"], program=E, files=RUN)
case("export-out-is-a-file", C, [*OK, "--out", "{chief}"], program=E, files=RUN)
case("export-out-is-another-directory", C, [*OK, "--out", "{d}/md", "--overwrite"], program=E,
     files=RUN, note="a directory that is not a SavedModel is never replaced")
case("export-out-is-a-saved-model", C, [*OK, "--out", "{d}/sm"], program=E,
     files={**RUN, "sm/saved_model.pb": ""}, note="replaced only with --overwrite")
case("export-out-under-a-file", C, [*OK, "--out", "{chief}/model"], program=E, files=RUN)
case("export-out-empty", C, [*OK, "--out", ""], program=E, files=RUN)
case("export-out-symlink", C, [*OK, "--out", "{d}/link", "--overwrite"], program=E,
     files={**RUN, "sm/saved_model.pb": "", "link": {"symlink": "sm"}})
case("export-serving-fn-not-a-name", C, [*OK, "--out", "{d}/out", "--serving_fn", "a.b"],
     program=E, files=RUN)
case("export-unknown-flag", C, [*OK, "--out", "{d}/out", "--bogus"], program=E, files=RUN)


# ================================================================ every emitter's flags (issue 25)
# Generated by class over every flag of every engine (`tfps.emit.cli.ENGINES`): for each flag,
# values of the wrong type, negative or out of range, below a floor; for each ROLE=VALUE flag,
# a role given twice and a role the job does not have; for each engine's own flag, its use
# with another engine or with a launch. `EMIT_FLAGS` says what each flag takes, and
# tests/unit/test_emit_hostile.py checks that it lists every flag the engines declare, so a new
# flag gets its cases. Each case expects the error line to name the flag and the value.
import re  # noqa: E402

from tfps.emit import cli as _emit_cli  # noqa: E402

# dest -> (how the error names it: a regex matching the flag or the spec's field, the bad
# values of its kind). A value is shown in the error as repr(value) or as itself.
_COUNT = ("abc", "-1", "２")
_ROLE_BAD = ("ps=abc", "ps=-1", "boss=2", "ps")
EMIT_FLAGS = {
    "name": (r"--name|`name`", ("", "Upper", "a b", "a" * 70)),
    "gpus_per_worker": (r"--gpus-per-worker", _COUNT),
    "model_bytes": (r"--model-bytes", ("lots", "0", "-5GB")),
    "max_restarts": (r"--max-restarts", _COUNT),
    "image": (r"--image|`image`", ("", "a b")),
    "namespace": (r"--namespace|`namespace`", ("", "Team-A", "a_b")),
    "backoff_limit": (r"--backoff-limit", _COUNT),
    "istio_sidecar": (r"--istio-sidecar", ()),
    "cpu": (r"--cpu", _ROLE_BAD + ("ps=0",)),
    "memory": (r"--memory", _ROLE_BAD + ("ps=0Gi", "ps=100Mi", "worker=1023Mi")),
    "restart_policy": (r"--restart-policy", ("Sometimes", "")),
    "queue": (r"--queue|`queue`", ("Research", "root", "")),
    "nodes": (r"--nodes|`nodes`", _COUNT + ("0", "99")),
    "port_base": (r"--port-base|`port_base`", ("abc", "80", "-1", "65535", "70000")),
    "slurm_time": (r"--time|`time`", ("abc", "1:2:3:4", "1.5", "1d", "-2")),
    "partition": (r"--partition|`partition`", ("", "a b", "a'b")),
    "cpus_per_task": (r"--cpus-per-task", _COUNT + ("0",)),
    "mem": (r"--mem|`mem`", ("lots", "-1G", "1", "2G")),
    "requeue": (r"--requeue", ()),
}
# Where Slurm takes what Kubernetes does not (a job name "Upper", 70 characters long).
_SLURM_VALUES = {"name": ("", "a b", "a'b")}
# The ROLE=VALUE flags and a good value of each, for repeats.
_ROLE_FLAGS = {"cpu": "2", "memory": "4Gi"}


def _flag(dest: str) -> str:
    return {"slurm_time": "--time"}.get(dest, "--" + dest.replace("_", "-"))


def _needs(engine: str, dest: str) -> list[str]:
    """What a case of `engine` adds so that only `dest` is wrong (--nodes 1: a port base or a
    memory size is per node)."""
    extra = ["--image", "r/i:1"] if engine != "slurm" and dest != "image" else []
    return extra + (["--nodes", "1"] if dest in ("port_base", "mem") else [])


def _shown(value: str) -> str:
    """How the error line shows `value`: quoted (repr, cut), or as itself."""
    quoted = re.escape(repr(value[:40] + "..." if len(value) > 40 else value))
    return f"{quoted}|{re.escape(value)}" if value else quoted


# Each bad value once, the engines that take the flag in turn (a flag all Kubernetes engines
# share is read by one function): every engine meets every one of its flags at least once.
for _dest in sorted(EMIT_FLAGS):
    _takers = [e for e in _emit_cli.ENGINES if _dest in _emit_cli.flags(e)]
    for _n in range(max(len(EMIT_FLAGS[_dest][1]), len(_takers)) if EMIT_FLAGS[_dest][1] else 0):
        _engine = _takers[_n % len(_takers)]
        _named, _values = EMIT_FLAGS[_dest]
        _values = _SLURM_VALUES.get(_dest, _values) if _engine == "slurm" else _values
        _value = _values[_n % len(_values)]
        # argparse reads "--mem -1G" as two options (only "-1", "-1.5" pass for values):
        # such a value goes after "=".
        _optionlike = _value.startswith("-") and not re.fullmatch(r"-\d+|-\d*\.\d+", _value)
        _given = [f"{_flag(_dest)}={_value}"] if _optionlike else [_flag(_dest), _value]
        case(f"emit-{_engine}-{_dest}-{_n}", "emit-values",
             ["--emit", _engine, *_needs(_engine, _dest), *_given, "{chief}"],
             expect=(_named, _shown(_value)))
C = "emit-repeats"
for _engine in ("tfjob", "volcano", "trainjob"):
    for _dest, _good in _ROLE_FLAGS.items():
        _f = _flag(_dest)
        case(f"emit-{_engine}-{_dest}-twice", C,
             ["--emit", _engine, "--image", "r/i:1", _f, f"ps={_good}", _f, "ps=8", "{chief}"],
             expect=(re.escape(f"{_f} ps=8: ps is already given ({_f} ps={_good})"),),
             note="used to keep the last silently")
        case(f"emit-{_engine}-{_dest}-evaluator-without-one", C,
             ["--emit", _engine, "--image", "r/i:1", _f, f"evaluator={_good}", "{chief}"],
             expect=(re.escape(f"{_f} evaluator={_good}: the job has no evaluator"),),
             note="used to be dropped silently")
    case(f"emit-{_engine}-name-empty", C, ["--emit", _engine, "--image", "r/i:1", "--name", "",
                                           "{chief}"], expect=(r"--name '': empty",))
case("emit-slurm-name-empty", C, ["--emit", "slurm", "--name", "", "{chief}"],
     expect=(r"--name '': empty",), note="an empty name meant the default")
C = "emit-modes"
_ALL = set().union(*(_emit_cli.flags(e) for e in _emit_cli.ENGINES)) - _emit_cli.COMMON_FLAGS
for _dest in sorted(_ALL):
    _good = {"cpu": "ps=2", "memory": "ps=4Gi", "restart_policy": "Never", "nodes": "1",
             "port_base": "20000", "slurm_time": "90", "cpus_per_task": "2", "mem": "16G",
             "backoff_limit": "3"}.get(_dest, "x")
    _value = [] if EMIT_FLAGS[_dest][1] == () else [_good]
    for _engine in [e for e in _emit_cli.ENGINES if _dest not in _emit_cli.flags(e)] + [None]:
        _mode = ["--emit", _engine, *(["--image", "r/i:1"] if _engine != "slurm" else [])] \
            if _engine else []
        _where = f"--emit {_engine}" if _engine else "a launch"
        case(f"emit-{_dest}-with-{_engine or 'launch'}", C,
             [*_mode, _flag(_dest), *_value, "{chief}"],
             expect=(re.escape(f"{_flag(_dest)} cannot be combined with {_where}"),))

# ================================================================ what engines write (issue 25)
C = "engine-env"
for _layer in ("grpc+verbs", "grpc+gdr", "", "GRPC", "http"):
    case(f"tfconfig-rpc-layer-{_layer or 'empty'}", C, ["--from-env", DRY, "{chief}"],
         env={"TF_CONFIG": json.dumps({**json.loads(tf_config()), "rpc_layer": _layer})},
         expect=(r"rpc_layer", re.escape(repr(_layer)), r"only|not supported"),
         note="used to be dropped: the cluster ran gRPC whatever was asked")
JOBSET = {"JOBSET_NAME": "rec", "REPLICATED_JOB_NAME": "worker", "JOB_INDEX": "0",
          "JOB_COMPLETION_INDEX": "0", "TFPS_NUM_PS": "1", "TFPS_NUM_WORKERS": "2",
          "TFPS_EVALUATOR": "0"}
for _var, _value in (("REPLICATED_JOB_NAME", "launcher"), ("JOB_INDEX", "1"),
                     ("JOB_COMPLETION_INDEX", "2"), ("JOB_COMPLETION_INDEX", "-1"),
                     ("TFPS_NUM_WORKERS", "0"), ("TFPS_EVALUATOR", "yes"),
                     ("JOBSET_NAME", "Rec"), ("TFPS_PORT", "99999")):
    case(f"jobset-{_var.lower()}-{_value}", C, ["--from-env", DRY, "{chief}"],
         env={**JOBSET, _var: _value}, expect=(_var, re.escape(_value)))


# ================================================================ python -m tfps.export (issue 25)
# Generated by class over the export command's flags (`tfps.export.cli.parser`): for each flag,
# the bad values of its kind, the others valid, so that only that flag is wrong; and over the
# files it reads: every way a checkpoint or a model file can be damaged that can be told
# before TensorFlow is imported. Each case names the flag (or the file) in its `expect`;
# tests/unit/test_api_hostile.py checks that every flag has cases and every line matches.
CLASSES = CLASSES + ("export-flags", "export-files")
# A checkpoint index that passes for one before TensorFlow reads it: 48 bytes of table footer
# ending in LevelDB's magic number; and its one data shard.
_INDEX = bytes(40) + (0xdb4775248b80fb57).to_bytes(8, "little")
GOOD_RUN = {"md/checkpoints/checkpoint": 'model_checkpoint_path: "ckpt-1"\n',
            "md/checkpoints/ckpt-1.index": _INDEX,
            "md/checkpoints/ckpt-1.data-00000-of-00001": ""}
# A model file whose `build` is fine: every case fails before it would be called.
MODEL = "def build():\n    return None\n\ndef needs(n, m):\n    return None\n"
# flag -> (how the line names it, its bad values); {d} is the case directory.
EXPORT_FLAGS = {
    "model_dir": (r"--model_dir", ("", "{d}/nope", "{d}/model.py", "{d}/" + "x" * 300,
                                   "{d}/empty")),
    "model": (r"--model", ("", "build", "{d}/model.py", "{d}/none.py:build",
                           "a b:build", "{d}/model.py:1x", "{d}/model.py:absent",
                           "{d}/model.py:needs")),
    "out": (r"--out", ("", "{d}/model.py", "{d}/model.py/x", "{d}/md", "{d}/" + "n" * 240,
                       "{d}/" + "p" * 300 + "/x")),
    "serving_fn": (r"--serving_fn", ("", "a.b", "1x", "x y")),
    "overwrite": (r"--overwrite", ()),  # a switch: no value to get wrong
}
_EXPORT_BASE = {"model_dir": "{d}/md", "model": "{d}/model.py:build", "out": "{d}/out"}
for _dest, (_named, _values) in EXPORT_FLAGS.items():
    for _n, _value in enumerate(_values):
        _args = {**_EXPORT_BASE, _dest: _value}
        _argv = [a for k, v in _args.items() for a in (f"--{k}", v)]
        case(f"export-{_dest}-{_n}", "export-flags", _argv, program="export",
             files={**GOOD_RUN, "model.py": MODEL, "empty": {"dir": True}},
             expect=(re.escape(f"--{_dest} ") + "|" + re.escape(f"--{_dest}=")
                     if _dest != "model_dir" or _value else r"--model_dir ''",))

# What can be wrong with the files the command reads, one thing at a time.
_FILE_CASES = {
    "index-empty": ({"md/checkpoints/ckpt-1.index": ""}, r"ckpt-1\.index is truncated"),
    "index-truncated": ({"md/checkpoints/ckpt-1.index": _INDEX[:30]},
                        r"ckpt-1\.index is truncated"),
    "index-not-a-table": ({"md/checkpoints/ckpt-1.index": b"\x00" * 4096},
                          r"not a checkpoint index"),
    "index-a-directory": ({"md/checkpoints/ckpt-1.index": {"dir": True}},
                          r"ckpt-1|is missing"),
    "data-missing": ({"md/checkpoints/ckpt-1.data-00000-of-00001": None},
                     r"no data file"),
    "data-shard-missing": ({"md/checkpoints/ckpt-1.data-00000-of-00001": None,
                            "md/checkpoints/ckpt-1.data-00000-of-00002": ""},
                           r"data shard 1 of 2 is missing"),
    "record-unterminated": ({"md/checkpoints/checkpoint": 'model_checkpoint_path: "ckpt-1\n'},
                            r"checkpoint"),
    "record-empty": ({"md/checkpoints/checkpoint": ""}, r"checkpoint"),
    "record-names-another-directory": (
        {"md/checkpoints/checkpoint": 'model_checkpoint_path: "/nonexistent/ckpt-1"\n'},
        r"checkpoint"),
    "model-exits-at-import": ({"model.py": "import sys\nsys.exit(0)\n"},
                              r"exits at import \(SystemExit: 0\)"),
    "model-exits-3-at-import": ({"model.py": "raise SystemExit(3)\n"},
                                r"exits at import \(SystemExit: 3\)"),
    "model-raises-at-import": ({"model.py": "raise RuntimeError('no\\nway')\n"},
                               r"RuntimeError: no way"),
    "model-not-python": ({"model.py": "def build(:\n"}, r"SyntaxError"),
    "model-builder-needs-arguments": ({"model.py": MODEL.replace("def build()",
                                                                 "def build(vocab)")},
                                      r"build\(vocab\) needs arguments"),
    "model-builder-not-callable": ({"model.py": "build = 5\n"}, r"has no function build"),
    "model-binary": ({"model.py": bytes(range(256))}, r"cannot load"),
}
for _cid, (_changes, _expect) in _FILE_CASES.items():
    _files = {**GOOD_RUN, "model.py": MODEL, **_changes}
    case(f"export-file-{_cid}", "export-files",
         ["--model_dir", "{d}/md", "--model", "{d}/model.py:build", "--out", "{d}/out"],
         program="export", files={k: v for k, v in _files.items() if v is not None},
         expect=(_expect,))


# ================================================================ the Python API (issue 25)
# Generated by class over every public entry point that can be checked without TensorFlow:
# every option of every public dataclass (TrainerOptions, the modes, TableConfig), every
# argument of every schedule, every setting of every legacy optimizer, every argument kind
# of the Trainer, every Keras argument of DynamicEmbedding. A new option, argument or setting
# is covered when it is added (tests/unit/test_api_hostile.py runs these and checks that).
import inspect  # noqa: E402
import math  # noqa: E402

from tfps.layers import config as _layer_config  # noqa: E402
from tfps.schedules import config as _schedules  # noqa: E402
from tfps.train import arguments as _arguments  # noqa: E402
from tfps.train import modes as _modes  # noqa: E402
from tfps.train import optimizers as _optimizers  # noqa: E402
from tfps.train import options as _options  # noqa: E402

API_CLASSES = ("api-absurd", "api-ignored", "api-no-counterpart", "api-late")


@dataclasses.dataclass(frozen=True)
class ApiCase:
    """A call that must raise `tfps.errors.TfpsError` in one line naming `names` (any of
    them: the argument, or ``Class.field``) and showing `value` (`tfps.validate.describe`)."""

    id: str
    cls: str
    call: Callable[[], object]
    names: tuple[str, ...]
    value: object = None
    shown: bool = True  # whether the line must show the value

    def __str__(self) -> str:
        return self.id


API_CASES: list[ApiCase] = []


def api_case(id, cls, call, names, value=None, shown=True):
    assert cls in API_CLASSES, cls
    assert all(c.id != id for c in API_CASES), id
    API_CASES.append(ApiCase(id, cls, call, tuple(names), value, shown))


class _Unrepresentable:
    def __repr__(self):
        return "<a value of no kind tfps takes>"


# The hostile values every option meets: a wrong type, NaN, a negative, infinity, a huge
# number, a bool where a number goes, a list, an object of no kind.
BAD_VALUES = {"str": "x", "nan": math.nan, "negative": -1, "inf": math.inf, "huge": 10**30,
              "true": True, "list": [1, 2], "object": _Unrepresentable()}
# Public dataclasses, and the arguments each needs to be valid otherwise.
DATACLASSES = {_options.TrainerOptions: {}, _modes.PerStep: {}, _modes.Accumulate: {"steps": 2},
               _modes.StaleReads: {"every": 2}, _modes.LocalSteps: {"steps": 2},
               _layer_config.TableConfig: {"dim": 4}}
# (class, option, bad-value kind) that are good values after all: a bool option takes True,
# a default row may be -1.
ACCEPTED = {(c, f, "true") for c, f in (("TrainerOptions", "staleness_aware"),
                                        ("TrainerOptions", "stack_steps"),
                                        ("TrainerOptions", "dedup_lookups"),
                                        ("TrainerOptions", "fuse_dense"))} | {
    ("TableConfig", "default_value", "negative")}


def options_of(cls) -> list[str]:
    return [p for p in inspect.signature(cls).parameters if p != "self"]


for _cls, _base in DATACLASSES.items():
    for _field in options_of(_cls):
        for _kind, _bad in BAD_VALUES.items():
            if (_cls.__name__, _field, _kind) in ACCEPTED:
                continue
            api_case(f"{_cls.__name__}-{_field}-{_kind}", "api-absurd",
                     lambda c=_cls, b=_base, f=_field, v=_bad: c(**{**b, f: v}),
                     (_field, f"{_cls.__name__}.{_field}"), _bad)

# Out-of-mode: every mode given with every keyword of another mode (or its own, twice).
_MODE_KEYWORDS = {"steps_per_closure": 5, "accumulate_steps": 3, "read_every": 3,
                  "local_steps": 3, "outer_learning_rate": 0.5, "outer_momentum": 0.5}
for _mode in (_modes.PerStep(), _modes.Accumulate(2), _modes.StaleReads(2),
              _modes.LocalSteps(2)):
    for _kw, _v in _MODE_KEYWORDS.items():
        api_case(f"TrainerOptions-mode-{type(_mode).__name__}-with-{_kw}", "api-ignored",
                 lambda m=_mode, k=_kw, v=_v: _options.TrainerOptions(mode=m, **{k: v}),
                 (_kw,), _v)
for _kw in ("outer_learning_rate", "outer_momentum"):
    for _other in ("accumulate_steps", "read_every", None):
        api_case(f"TrainerOptions-{_kw}-with-{_other or 'per-step'}", "api-ignored",
                 lambda k=_kw, o=_other: _options.TrainerOptions(
                     **{k: 0.5, **({o: 3} if o else {})}), (_kw,), 0.5)
# A table setting that means nothing without another.
_DEPENDENT = {"policy": ("lfu", {"max_rows_per_shard": 10}),
              "evict_every": (5, {"ttl_steps": 10}),
              "seed": (3, {"initializer": "uniform"}),
              "init_scale": (0.1, {"initializer": "normal"})}
for _field, (_v, _needs) in _DEPENDENT.items():
    for _without in ({}, {"initializer": "zeros"}, {"initializer": lambda shape, dtype: 0}):
        if _without == {} and "initializer" in _needs:
            continue  # the default initializer is a hash one: fine
        _name = {(): "default", ("initializer",): "other-initializer"}[tuple(_without)]
        _name += "-callable" if callable(_without.get("initializer")) else ""
        api_case(f"TableConfig-{_field}-without-what-it-needs-{_name}", "api-ignored",
                 lambda f=_field, v=_v, w=_without: _layer_config.TableConfig(
                     dim=4, **{f: v, **w}), (_field,), _v)
# Keras layer arguments a DynamicEmbedding would not honour.
for _kw, _v in (("weights", [1]), ("input_dim", 100), ("autocast", False), ("dynamic", True),
                ("implementation", 2), ("mask_zero", True), ("vocabulary_size", 100),
                ("embeddings_initializer", "zeros"), ("dtype", "float64"),
                ("dtype", "mixed_float16"), ("dtype", "int32"), ("trainable", "no"),
                ("trainable", 0), ("name", 5), ("name", "")):
    api_case(f"DynamicEmbedding-{_kw}-{_v}", "api-ignored",
             lambda k=_kw, v=_v: _layer_config.check_layer_arguments({k: v}), (_kw,), _v)

# Schedules: every argument of every schedule, and the arguments of the others.
_SCHEDULE_BASE = {"constant": {"initial_learning_rate": 0.1},
                  "exponential": {"initial_learning_rate": 0.1, "decay_steps": 10,
                                  "decay_rate": 0.5},
                  "piecewise": {"boundaries": [10], "values": [0.1, 0.01]},
                  "polynomial": {"initial_learning_rate": 0.1, "decay_steps": 10},
                  "cosine": {"initial_learning_rate": 0.1, "decay_steps": 10},
                  "inverse_sqrt": {"initial_learning_rate": 0.1, "decay_steps": 10}}
assert set(_SCHEDULE_BASE) == set(_schedules.NAMES), "a new schedule needs a valid config here"
_SCHEDULE_FLAGS = ("staircase", "cycle")
for _kind, (_required, _optional) in _schedules.SPECS.items():
    _accepted = (*_required, *_optional, *_schedules.COMMON)
    for _arg in _accepted:
        for _bk, _bad in BAD_VALUES.items():
            if (_arg in _SCHEDULE_FLAGS and _bk == "true") or (
                    (_arg, _bk) == ("values", "list")):  # [1, 2]: two good values
                continue
            api_case(f"schedule-{_kind}-{_arg}-{_bk}", "api-absurd",
                     lambda k=_kind, a=_arg, v=_bad: _schedules.check(
                         k, {**_SCHEDULE_BASE[k], a: v}), (_arg,), _bad)
    _others = {a for r, o in _schedules.SPECS.values() for a in (*r, *o)} - set(_accepted)
    for _arg in sorted(_others):
        api_case(f"schedule-{_kind}-with-{_arg}", "api-ignored",
                 lambda k=_kind, a=_arg: _schedules.check(k, {**_SCHEDULE_BASE[k], a: 1}),
                 (_arg,), 1)
for _bk, _bad in BAD_VALUES.items():
    api_case(f"learning-rate-{_bk}", "api-absurd",
             lambda v=_bad: _schedules.check_learning_rate("learning_rate", v),
             ("learning_rate",), _bad)

# Optimizers: every setting of every legacy optimizer; the settings of the others; the
# Keras 3 / tf_keras settings no legacy optimizer has.
_SETTING_ACCEPTS = {("name", "str"), ("learning_rate_power", "negative")} | {
    (f, "true") for f in ("nesterov", "amsgrad", "centered")}
_GOOD_SETTING = {"nesterov": True, "amsgrad": True, "centered": True, "name": "n"}
for _kind, _settings in _optimizers.LEGACY_SETTINGS.items():
    for _setting in _settings:
        for _bk, _bad in BAD_VALUES.items():
            if (_setting, _bk) in _SETTING_ACCEPTS:
                continue
            api_case(f"optimizer-{_kind}-{_setting}-{_bk}", "api-absurd",
                     lambda k=_kind, s=_setting, v=_bad: _optimizers.check_settings(
                         k, {s: v}), (_setting,), _bad)
    for _setting in sorted(set(_optimizers.SETTINGS) - set(_settings) - {"lr"}):
        api_case(f"optimizer-{_kind}-with-{_setting}", "api-ignored",
                 lambda k=_kind, s=_setting: _optimizers.check_settings(
                     k, {s: _GOOD_SETTING.get(s, 0.5)}), (_setting,),
                 _GOOD_SETTING.get(_setting, 0.5))
    _set = {"weight_decay": 0.01, "use_ema": True, "gradient_accumulation_steps": 2,
            "loss_scale_factor": 128.0, "jit_compile": True}
    assert set(_set) == set(_optimizers.NO_COUNTERPART), "give the new setting a value here"
    for _setting, _v in _set.items():
        api_case(f"optimizer-{_kind}-{_setting}", "api-no-counterpart",
                 lambda k=_kind, s=_setting, v=_v: _optimizers.check_settings(k, {s: v}),
                 (_setting,), _v)
        api_case(f"as-ps-optimizer-{_kind.lower()}-{_setting}", "api-no-counterpart",
                 lambda k=_kind, s=_setting, v=_v: _optimizers.as_ps_optimizer(
                     k.lower(), **{s: v}), (_setting,), _v)
api_case("as-ps-optimizer-unknown-name", "api-no-counterpart",
         lambda: _optimizers.as_ps_optimizer("adamw"), ("optimizer",), "adamw")
api_case("as-ps-optimizer-a-class", "api-late",
         lambda: _optimizers.as_ps_optimizer(type("SGD", (), {"get_config": dict})),
         ("optimizer",), shown=False)


# The Trainer's arguments, by kind (`tfps.train.arguments.ARGUMENTS`).
class _Schedule:  # a schedule class given where an instance goes
    def __call__(self, step):
        return 0.1


BAD_BY_KIND = {
    "function(model, batch)": {"int": 5, "str": "x", "class": int,
                               "one-argument": lambda batch: 0,
                               "three-arguments": lambda a, b, c: 0},
    "function(input_context) or None": {"int": 5, "str": "x", "class": dict,
                                        "no-argument": lambda: 0,
                                        "two-arguments": lambda a, b: 0},
    "function(model, batch) or None": {"int": 5, "one-argument": lambda m: 0},
    "model": {"int": 5, "str": "x", "none": None, "one-argument": lambda n: 0},
    "optimizer": {"object": _Unrepresentable(), "int": 5, "class": _Schedule},
    "learning rate or None": {**{k: v for k, v in BAD_VALUES.items() if k != "object"},
                              "string-number": "0.1", "class": _Schedule},
    "directory or None": {"empty": "", "nul": "a\0b", "int": 5, "long": "d" * 5000,
                          "a-file": __file__},
    "count or None": {"str": "32", "zero": 0, "negative": -1, "float": 1.5, "true": True,
                      "huge": 10**30},
    "options": {"class": _options.TrainerOptions, "dict": {}, "int": 5},
}
# Kinds checked only with TensorFlow (tests/integration/test_settings.py).
TF_ONLY_KINDS = {"strategy", "input or None"}
for _arg, _kind in _arguments.ARGUMENTS.items():
    for _bk, _bad in BAD_BY_KIND.get(_kind, {}).items():
        api_case(f"trainer-{_arg}-{_bk}", "api-late" if _bk in (
            "class", "one-argument", "three-arguments", "no-argument", "two-arguments",
            "string-number", "str") else "api-absurd",
            lambda a=_arg, v=_bad: _arguments.check(**{a: v}), (_arg,), _bad,
            shown=not callable(_bad) or isinstance(_bad, type))


# Initializers: a class for an instance, a function of the wrong arguments.
class _Init:
    def __init__(self, shape, dtype):
        pass


for _cid, _init in (("class", _Init), ("no-argument", lambda: 0),
                    ("three-arguments", lambda a, b, c: 0), ("int", 5),
                    ("keras-name", "he_normal")):
    api_case(f"TableConfig-initializer-{_cid}", "api-late",
             lambda i=_init: _layer_config.TableConfig(dim=4, initializer=i),
             ("initializer",), _init)


# ================================================================ running a case
@dataclasses.dataclass
class Ports:
    """The ports a case may name: one held busy (listening) by the runner, two free ones."""

    busy: int
    free: int
    free2: int


def hold_busy_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def substituter(d: str, ports: Ports) -> Callable[[str], str]:
    values = {"{d}": d, "{chief}": os.path.join(d, "chief.py"), "{busy}": str(ports.busy),
              "{free}": str(ports.free), "{free2}": str(ports.free2)}

    def subst(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text
    return subst


def materialize(c: Case, d: str, subst: Callable[[str], str]) -> None:
    """Writes the case's files (and the trivial chief) into `d`."""
    with open(os.path.join(d, "chief.py"), "w") as f:
        f.write(CHIEF)
    for name, content in c.files:
        path = os.path.join(d, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = None
        if isinstance(content, dict):
            if content.get("fifo"):
                os.mkfifo(path)
                continue
            if "symlink" in content:
                os.symlink(content["symlink"], path)
                continue
            if content.get("dir"):
                os.makedirs(path, exist_ok=True)
                continue
            mode, content = content.get("mode"), content["data"]
        if callable(content):
            content = content()
        if isinstance(content, str):
            content = subst(content).encode("utf-8", "surrogateescape")
        with open(path, "wb") as f:
            f.write(content)
        if mode is not None:
            os.chmod(path, mode)


def argv_and_env(c: Case, subst: Callable[[str], str]) -> tuple[list[str], dict[str, str]]:
    return [subst(a) for a in c.argv], {k: subst(v) for k, v in c.env}


def is_engine_variable(name: str) -> bool:
    """Variables that describe a cluster: removed before every case."""
    return name == "TF_CONFIG" or name.startswith(("SLURM", "TFPS_"))


def listing(d: str) -> set[str]:
    """Every path under `d` (relative), to compare before and after a case."""
    out = set()
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            path = os.path.join(root, name)
            if not stat.S_ISFIFO(os.lstat(path).st_mode):
                out.add(os.path.relpath(path, d))
            else:
                out.add(os.path.relpath(path, d) + "|fifo")
    return out
