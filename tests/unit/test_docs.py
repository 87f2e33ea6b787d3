"""The documentation site builds strictly: a broken link, a missing page, a bad anchor or an API
reference that does not resolve fails the suite.

``mkdocs build --strict`` (mkdocs.yml) runs as a subprocess into a temporary directory.
mkdocstrings reads tfps's docstrings by static analysis (griffe), so the build imports no
tfps and, in this lane, could not import TensorFlow anyway (the stand-ins on ``PYTHONPATH``
are inherited). The README's size is checked here too: it is the front door, the manual is
the site.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from conftest import REPO

# A build takes a few seconds; this is for a loaded 2-core machine.
BUILD_TIMEOUT_S = 180
# The README is the front door: what tfps is, install, the two commands, a quick start, links.
README_MAX_LINES = 200


def test_the_site_builds_strictly(tmp_path):
    assert importlib.util.find_spec("mkdocs") is not None, \
        "mkdocs is not installed: pip install -e '.[test]' (./test.sh does)"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner, not a finding
    # No --quiet: it raises mkdocs' log level above WARNING, and --strict counts warnings only
    # when they are logged, so a quiet strict build passes over broken links.
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--site-dir", str(tmp_path / "site")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    output = proc.stdout + proc.stderr
    findings = [line for line in output.splitlines()
                if line.startswith(("WARNING", "ERROR")) or "Aborted" in line]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + (
        "\n".join(findings) if findings else output)
    assert (tmp_path / "site" / "api" / "tfps" / "index.html").is_file()
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()


def test_the_readme_is_short():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES, \
        f"README.md has {len(lines)} lines: the manual belongs in docs/ (the site)"
    first_screen = [line.split()[0] for line in lines[:20] if line.strip()]
    assert "./demo.sh" in first_screen and "./test.sh" in first_screen, lines[:20]
