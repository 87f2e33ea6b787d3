"""The unit lane (tests/unit) runs without TensorFlow, whatever runs it (``./test.sh unit``, a
plain ``pytest tests/unit``, or one pytest session with the other lanes). A plugin of
tests/conftest.py.

While a module of this folder is imported and while one of its tests runs, importing
tensorflow, tf_keras or keras raises ``ImportError`` (modules another lane already imported
are hidden for that time and put back after), and a process the test starts gets the
stand-ins of ``no_tensorflow/`` first on its ``PYTHONPATH``, which raise on import too. A test
that needs TensorFlow belongs in tests/integration.
"""

from __future__ import annotations

import contextlib
import os
import sys

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unit")
STUBS = os.path.join(HERE, "no_tensorflow")
BLOCKED = ("tensorflow", "tf_keras", "keras")
MESSAGE = ("tensorflow cannot be imported in the unit lane (tests/unit): move a test that "
           "needs it to tests/integration")


class _Blocker:
    """A meta-path finder that refuses the blocked packages (and their submodules)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(MESSAGE)
        return None


@contextlib.contextmanager
def no_tensorflow():
    """Within the block, TensorFlow cannot be imported, here or in a child process."""
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules)
              if name.split(".")[0] in BLOCKED}
    blocker = _Blocker()
    sys.meta_path.insert(0, blocker)
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = STUBS + (os.pathsep + old_path if old_path else "")
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path
        for name in [n for n in sys.modules if n.split(".")[0] in BLOCKED]:
            sys.modules.pop(name)  # a stand-in imported meanwhile
        sys.modules.update(hidden)


def _here(path) -> bool:
    return os.path.abspath(str(path)).startswith(HERE + os.sep)


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makemodule(module_path, parent):
    if not _here(module_path):
        return (yield)
    with no_tensorflow():
        module = yield
        _ = module.obj  # import the test module now, inside the block
    return module


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not _here(item.path):
        return (yield)
    with no_tensorflow():
        return (yield)
