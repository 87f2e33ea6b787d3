"""Where an export goes (`tfps.export.paths`), without TensorFlow: which paths are refused,
the write beside the path and the rename into place, replacing a SavedModel in one step, what
a failed write leaves, and the clean-up of temporary directories of dead processes. Also the
checkpoint record `python -m tfps.export` reads (`tfps.checkpoints.latest_checkpoint`).

The kill of a real exporting process is in tests/integration/test_export.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tfps.checkpoints import latest_checkpoint
from tfps.errors import ConfigError, TfpsError
from tfps.export import paths


def _saved_model(path, content: str = "old") -> None:
    os.makedirs(os.path.join(path, "variables"), exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "w") as f:
        f.write(content)


def _write(content: str):
    def write(directory):
        assert os.listdir(directory) == []  # a fresh, empty directory beside the target
        _saved_model(directory, content)
    return write


def _read(path) -> str:
    with open(os.path.join(path, "saved_model.pb")) as f:
        return f.read()


def _beside(path) -> list[str]:
    return sorted(n for n in os.listdir(os.path.dirname(path)) if n != os.path.basename(path))


@pytest.mark.parametrize("name, make, overwrite, message", [
    ("file", lambda p: open(p, "w").close(), True, "it is a file that is not a SavedModel"),
    ("empty-dir", os.mkdir, True, "it is a directory that is not a SavedModel"),
    ("saved-model", _saved_model, False, "pass overwrite=True to replace it"),
    ("symlink", lambda p: os.symlink("/", p), True, "must not be a symbolic link"),
])
def test_refused_targets_name_the_argument_and_value(tmp_path, name, make, overwrite, message):
    target = str(tmp_path / name)
    make(target)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError) as info:
        paths.check_target(target, overwrite=overwrite)
    text = str(info.value)
    assert message in text and text.startswith("Argument `path` ") and repr(target) in text
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("bad", ["", None, 3, "a\0b"])
def test_not_a_path(bad):
    with pytest.raises(ConfigError, match="must be a non-empty path"):
        paths.check_target(bad, overwrite=False)


def test_under_a_file_or_a_read_only_directory(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="under a writable directory"):
        paths.check_target(str(tmp_path / "f" / "model"), overwrite=False)
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="under a writable directory"):
            paths.check_target(str(tmp_path / "ro" / "model"), overwrite=False)


def test_command_line_style_for_flags(tmp_path):
    _saved_model(str(tmp_path / "m"))
    with pytest.raises(ConfigError) as info:
        paths.check_target(str(tmp_path / "m"), overwrite=False, name="--out")
    assert str(info.value) == (f"--out {str(tmp_path / 'm')!r}: must not exist yet (it holds a "
                               f"SavedModel; pass --overwrite to replace it)")


def test_new_path_with_missing_parents(tmp_path):
    target = paths.check_target(str(tmp_path / "models" / "recsys" / "1"), overwrite=False)
    assert not (tmp_path / "models").exists()  # nothing created by the check
    assert paths.write_atomically(target, _write("new")) == target
    assert _read(target) == "new" and paths.is_saved_model(target)
    assert _beside(target) == []  # no temporary directory left


def test_a_failed_write_leaves_nothing(tmp_path):
    target = str(tmp_path / "m")

    def fail(directory):
        _saved_model(directory, "half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        paths.write_atomically(target, fail)
    assert os.listdir(tmp_path) == []


def test_a_failed_overwrite_keeps_the_previous_export(tmp_path):
    target = str(tmp_path / "m")
    _saved_model(target, "old")
    with pytest.raises(RuntimeError):
        paths.write_atomically(target, lambda d: (_ for _ in ()).throw(RuntimeError("x")))
    assert _read(target) == "old" and _beside(target) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_replaces_in_place(tmp_path, monkeypatch, exchange):
    if not exchange:  # where the system has no atomic exchange
        monkeypatch.setattr(paths, "_exchange", lambda a, b: False)
    target = str(tmp_path / "m")
    _saved_model(target, "old")
    paths.write_atomically(paths.check_target(target, overwrite=True), _write("new"))
    assert _read(target) == "new" and _beside(target) == []


def test_renameat2_exchanges_directories_here(tmp_path):
    """The atomic swap is really available on this machine (Linux): not a silent fallback."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("")
    assert paths._exchange(str(a), str(b))
    assert os.listdir(b) == ["x"] and os.listdir(a) == []


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    target = str(tmp_path / "m")
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = tmp_path / f".m.tmp.{host}.{dead}.abc123"
    live = tmp_path / f".m.tmp.{host}.{os.getpid()}.def456"
    other_host = tmp_path / f".m.tmp.not-{host}.{dead}.ghi789"
    other_model = tmp_path / f".m2.tmp.{host}.{dead}.jkl012"
    for d in (left, live, other_host, other_model):
        d.mkdir()
    assert paths.remove_stale_temps(target) == [str(left)]
    assert not left.exists() and live.exists() and other_host.exists() and other_model.exists()


def test_latest_checkpoint_record(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "checkpoint").write_text('model_checkpoint_path: "ckpt-700"\n'
                                      'all_model_checkpoint_paths: "ckpt-500"\n'
                                      'all_model_checkpoint_paths: "ckpt-700"\n')
    (ckpts / "ckpt-700.index").write_text("")
    assert latest_checkpoint(str(tmp_path / "run")) == str(ckpts / "ckpt-700")
    assert latest_checkpoint(str(ckpts)) == str(ckpts / "ckpt-700")  # the folder itself
    (ckpts / "ckpt-700.index").unlink()
    with pytest.raises(TfpsError, match="the latest checkpoint, .*ckpt-700, is missing"):
        latest_checkpoint(str(tmp_path / "run"))
