"""Every example has a test that runs it and a paragraph in examples/README.md.

A new script in examples/ without a test fails here, so CI catches it before the example rots.
"""

from __future__ import annotations

import glob
import os

import pytest

from conftest import REPO

EXAMPLES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "examples", "*.py"))
                  + glob.glob(os.path.join(REPO, "examples", "*.ipynb")))
THIS_FILE = os.path.basename(__file__)
# What a test that really runs a script through the launcher contains: the `launch` fixture of
# conftest.py, or ``python -m tfps.launch`` spelled out.
LAUNCH_MARKERS = ("launch(", "tfps.launch")


def _test_files() -> dict[str, str]:
    out = {}
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "test_*.py"))):
        if os.path.basename(path) != THIS_FILE:
            with open(path) as f:
                out[os.path.basename(path)] = f.read()
    return out


def test_examples_found():
    assert "linear_regression.py" in EXAMPLES and "colab_demo.ipynb" in EXAMPLES, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_has_a_test(example):
    tests = _test_files()
    naming = [name for name, text in tests.items() if example in text]
    assert naming, (f"examples/{example} appears in no tests/test_*.py: add a test that runs it "
                    f"(scripts through tfps-launch, in a short mode)")
    if example.endswith(".py"):
        launched = [name for name in naming if any(m in tests[name] for m in LAUNCH_MARKERS)]
        assert launched, (f"examples/{example} is named in {naming}, but none of them runs "
                          f"tfps-launch")


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_is_described_in_examples_readme(example):
    with open(os.path.join(REPO, "examples", "README.md")) as f:
        readme = f.read()
    assert f"`{example}`" in readme, f"examples/README.md has no paragraph on {example}"
