"""The shape of the `tfps` package: layers, no import circle, small modules.

Read from the syntax trees of tfps/**/*.py (no module is imported, so no TensorFlow). Every
import counts, a lazy one inside a function too: it runs, later, all the same.

* Every top-level package or module of tfps sits in one layer of `LAYERS`, and imports only
  from its own layer or the layers below it; a package inside a package (``launch/run/``)
  imports nothing of the package around it.
* No two modules import each other, directly or around a circle, and neither do two
  top-level packages.
* No module is over `MAX_LINES` lines.
"""

from __future__ import annotations

import ast
import collections
import os

import pytest
from conftest import REPO

ROOT = os.path.join(REPO, "tfps")
MAX_LINES = 400

# The layers of tfps, lowest first: a package may import from its own layer and the layers
# below it, never from a layer above. A new top-level package or module must be placed here
# (a `data/` package, say, beside train/ and keras/).
LAYERS = (
    # Helpers every package may use: the exception hierarchy, exit codes, argument checks,
    # sizes in bytes, what the command lines share, the one door to TF internals, the process
    # environment, sizing rules.
    ("errors", "exit_codes", "validate", "_units", "_cli", "_tf", "_tf_checkpoint",
     "_tf_coordinator", "_tf_keras", "_tf_server", "_env", "policy"),
    # The cluster model: Cluster/TaskId, addresses, spec files, Slurm steps, ports.
    ("cluster",),
    # Manifests for external engines (--emit): one typed spec per engine.
    ("emit",),
    # Running a cluster: tfps-launch (its run/ package, --doctor, the CLI) and the task server.
    ("launch", "server"),
    # ParameterServerStrategy and its coordinator; learning-rate schedules.
    ("strategy", "schedules"),
    # DynamicEmbedding and its tables.
    ("layers",),
    # The one home of checkpoint knowledge.
    ("checkpoints",),
    # From a model on ps tasks to serving.
    ("export",),
    # Training input: how each closure gets its batches (per-worker datasets, files).
    ("data",),
    # What trains: the Trainer and Keras fit.
    ("train", "keras"),
)

# Imports that break the rules today, each named, with the reason it is tolerated. Keep it
# empty: an entry here is a debt, and the test fails once the import is gone, so that the
# entry goes with it.
ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: str) -> str:
    parts = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, str]:
    """Every module of tfps: dotted name -> path."""
    out = {}
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                out[_module_name(path)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of tfps that `name` (a module, or a name inside one) is, or lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: str) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of a tfps module in `path`."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(_resolve(a.name), node.lineno) for a in node.names
                    if a.name.split(".")[0] == "tfps"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "tfps":
                continue
            for alias in node.names:
                # `from tfps.x import y`: y is a module of tfps.x, or a name defined there.
                target = f"{source}.{alias.name}"
                out.append((target if target in MODULES else _resolve(source), node.lineno))
    return [(target, line) for target, line in out if target and target != module]


EDGES = {module: _imports(module, path) for module, path in MODULES.items()}


def _unit(module: str) -> str:
    """The top-level package or module of tfps that `module` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(unit: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if unit in layer), None)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _edges(skip_allowed: bool = True):
    for module, imports in sorted(EDGES.items()):
        for target, line in imports:
            if not (skip_allowed and (module, target) in ALLOWED):
                yield module, target, line


def test_every_top_level_package_is_in_one_layer():
    units = {_unit(m) for m in MODULES} - {""}
    unplaced = sorted(u for u in units if _layer(u) is None)
    assert not unplaced, f"place these in LAYERS (tests/unit/test_structure.py): {unplaced}"
    placed = [u for layer in LAYERS for u in layer]
    assert len(placed) == len(set(placed)), "a name appears in two layers"


def test_no_package_imports_a_layer_above_it():
    upward = [f"{module}:{line} imports {target} (layer {_layer(_unit(target))} > "
              f"{_layer(_unit(module))})"
              for module, target, line in _edges()
              if _unit(module) and _unit(target)
              and _layer(_unit(target)) > _layer(_unit(module))]
    assert not upward, "\n".join(upward)


def test_nothing_imports_the_top_level_facade():
    # tfps/__init__.py re-exports (and loads lazily) what users call; a module of tfps that
    # imported it would depend on everything it re-exports.
    users = [f"{module}:{line}" for module, target, line in _edges() if target == "tfps"]
    assert not users, users


def test_no_inner_package_imports_the_package_around_it():
    # tfps.launch.run.* may not import tfps.launch.*: the run/ package is below the CLI.
    outward = []
    for module, target, line in _edges():
        package = module if MODULES[module].endswith("__init__.py") else \
            module.rpartition(".")[0]
        for outer in _ancestors(package):
            if _within(target, outer) and not _within(target, package):
                outward.append(f"{module}:{line} imports {target}, of {outer} around it")
                break
    assert not outward, "\n".join(outward)


def _ancestors(package: str) -> list[str]:
    """The packages around `package` below the top-level one (tfps.a.b.c -> tfps.a.b, ...)."""
    parts = package.split(".")
    return [".".join(parts[:n]) for n in range(len(parts) - 1, 1, -1)]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_two_modules_import_each_other():
    graph = collections.defaultdict(set)
    for module, target, _ in _edges():
        graph[module].add(target)
    assert not _cycles(graph), _cycles(graph)


def test_no_two_top_level_packages_import_each_other():
    graph = collections.defaultdict(set)
    for module, target, _ in _edges():
        if _unit(module) and _unit(target) and _unit(module) != _unit(target):
            graph[_unit(module)].add(_unit(target))
    assert not _cycles(graph), _cycles(graph)


def test_allowed_exceptions_are_still_needed():
    present = {(module, target) for module, target, _ in _edges(skip_allowed=False)}
    stale = sorted(edge for edge in ALLOWED if edge not in present)
    assert not stale, f"no longer imported: remove from ALLOWED: {stale}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    with open(MODULES[module], encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"{os.path.relpath(MODULES[module], REPO)}: {lines} lines"


def test_the_lanes_run_together_have_distinct_file_names():
    """``./test.sh`` runs tests/integration and tests/drills in one pytest session (and
    ``pytest tests`` all three lanes): pytest imports test files by their base name, so two
    files of one name in those folders break collection ("import file mismatch")."""
    tests = os.path.join(REPO, "tests")
    seen: dict[str, str] = {}
    clashes = []
    for lane in ("integration", "drills"):
        for name in sorted(os.listdir(os.path.join(tests, lane))):
            if name.endswith(".py") and name != "__init__.py":
                if name in seen:
                    clashes.append(f"{name} ({seen[name]} and {lane})")
                seen[name] = lane
    assert not clashes, clashes
