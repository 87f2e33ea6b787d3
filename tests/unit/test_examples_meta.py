"""Every example has a test that runs it and a paragraph in examples/README.md.

A new script in examples/ without a test fails here, so CI catches it before the example rots.
"Has a test" is read from the test files' syntax trees, not their text: a name in a comment or
a docstring does not count, and for a script the same test file must run the launcher (call
the `launch` fixture, or spell out ``tfps.launch``).
"""

from __future__ import annotations

import ast
import glob
import os

import pytest
from conftest import REPO

EXAMPLES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "examples", "*.py"))
                  + glob.glob(os.path.join(REPO, "examples", "*.ipynb")))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def code_facts(source: str) -> tuple[set[str], bool]:
    """(string constants that are not docstrings, whether the code runs the launcher)."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
               and isinstance(node.value, str) and id(node) not in docs}
    calls_launch = any(isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == "launch") or
        (isinstance(node.func, ast.Attribute) and node.func.attr == "launch"))
        for node in ast.walk(tree))
    return strings, calls_launch or any("tfps.launch" in s for s in strings)


def names_example(strings: set[str], example: str) -> bool:
    return any(s == example or s.endswith("/" + example) for s in strings)


def _test_files() -> dict[str, tuple[set[str], bool]]:
    out = {}
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "**", "test_*.py"), recursive=True)):
        if os.path.abspath(path) != os.path.abspath(__file__):
            with open(path) as f:
                out[os.path.relpath(path, REPO)] = code_facts(f.read())
    return out


def test_examples_found():
    assert "linear_regression.py" in EXAMPLES and "colab_demo.ipynb" in EXAMPLES, EXAMPLES


def test_the_check_ignores_comments_and_docstrings():
    commented = '"""Runs examples/recsys.py."""\n# launch("examples/recsys.py")\nx = 1\n'
    strings, launches = code_facts(commented)
    assert not names_example(strings, "recsys.py") and not launches
    real = 'def test_a(launch):\n    launch("examples/recsys.py")\n'
    strings, launches = code_facts(real)
    assert names_example(strings, "recsys.py") and launches


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_has_a_test(example):
    tests = _test_files()
    naming = [name for name, (strings, _) in tests.items() if names_example(strings, example)]
    assert naming, (f"examples/{example} is named in no test's code: add a test that runs it "
                    f"(scripts through tfps-launch, in a short mode)")
    if example.endswith(".py"):
        launched = [name for name in naming if tests[name][1]]
        assert launched, (f"examples/{example} is named in {naming}, but none of them runs "
                          f"tfps-launch")


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_is_described_in_examples_readme(example):
    with open(os.path.join(REPO, "examples", "README.md")) as f:
        readme = f.read()
    assert f"`{example}`" in readme, f"examples/README.md has no paragraph on {example}"
