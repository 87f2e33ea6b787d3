"""Every setting means what it says (issue 25), for the Python API and ``python -m
tfps.export``, without TensorFlow: the classes of hostile input generated in
tests/hostile_cases.py over every public entry point that can be checked before TensorFlow
loads (every option of every public dataclass, every argument of every schedule, every setting
of every legacy optimizer, every argument of the Trainer, every Keras argument of
DynamicEmbedding, every flag and input file of the export command).

Each API case must raise a `tfps.errors.TfpsError` of one line that names the argument (or
``Class.field``) and shows the value; each export case must exit 2 with one line that names
the flag or the file (tests/unit/test_hostile.py holds those to the common promise too). The
coverage tests fail when an option, argument, setting or flag is added without cases, so a
new one cannot slip past. What needs TensorFlow is in tests/integration/test_settings.py.
"""

from __future__ import annotations

import collections
import inspect
import os
import re

import hostile_cases as H
import pytest

from tfps import validate
from tfps.errors import TfpsError
from tfps.export import cli as export_cli
from tfps.layers import config as layer_config
from tfps.schedules import config as schedules
from tfps.train import arguments, optimizers

# The longest an API error line may be (it quotes short prefixes of values).
MAX_LINE = 600


def test_every_api_class_has_cases():
    counts = collections.Counter(c.cls for c in H.API_CASES)
    assert set(counts) == set(H.API_CLASSES) and min(counts.values()) >= 5, counts
    exports = collections.Counter(c.cls for c in H.CASES if c.program == "export")
    assert exports["export-flags"] >= 5 and exports["export-files"] >= 5, exports


@pytest.mark.parametrize("case", H.API_CASES, ids=str)
def test_the_api_refuses_in_one_line_naming_argument_and_value(case):
    with pytest.raises(TfpsError) as info:
        case.call()
    line = str(info.value)
    assert "\n" not in line and len(line) < MAX_LINE, line
    assert any(f"`{name}`" in line for name in case.names), (case.names, line)
    if case.shown:
        assert validate.describe(case.value) in line, (validate.describe(case.value), line)


# ------------------------------------------------------------------ nothing left out
def test_every_option_of_every_public_dataclass_meets_every_bad_value():
    ids = {c.id for c in H.API_CASES}
    for cls in H.DATACLASSES:
        for field in H.options_of(cls):
            for kind in H.BAD_VALUES:
                if (cls.__name__, field, kind) not in H.ACCEPTED:
                    assert f"{cls.__name__}-{field}-{kind}" in ids, (cls, field, kind)
    # the public dataclasses are all listed: every one tfps.train.modes exports
    from tfps.train import modes
    assert set(modes.MODES) <= set(H.DATACLASSES)


def test_every_schedule_argument_and_optimizer_setting_has_cases():
    ids = {c.id for c in H.API_CASES}
    for kind, (required, optional) in schedules.SPECS.items():
        for arg in (*required, *optional, *schedules.COMMON):
            assert f"schedule-{kind}-{arg}-nan" in ids, (kind, arg)
    for kind, settings in optimizers.LEGACY_SETTINGS.items():
        assert set(settings) <= set(optimizers.SETTINGS), "give the new setting a range"
        for setting in settings:
            assert any(i.startswith(f"optimizer-{kind}-{setting}-") for i in ids), setting
        for setting in optimizers.NO_COUNTERPART:
            assert f"optimizer-{kind}-{setting}" in ids


def test_every_trainer_argument_kind_has_bad_values():
    kinds = set(arguments.ARGUMENTS.values())
    assert kinds - H.TF_ONLY_KINDS == set(H.BAD_BY_KIND), "give the new kind bad values"


def test_every_export_flag_has_cases():
    actions = export_cli.parser()._actions  # argparse lists its flags nowhere else
    dests = {a.dest for a in actions if a.option_strings} - {"help"}
    assert dests == set(H.EXPORT_FLAGS), "add the new flag to EXPORT_FLAGS"
    ids = {c.id for c in H.CASES}
    for dest, (_, values) in H.EXPORT_FLAGS.items():
        assert all(f"export-{dest}-{n}" in ids for n in range(len(values)))


def test_layer_arguments_are_the_ones_keras_takes():
    """What DynamicEmbedding honours of Keras's layer arguments, and why, is one table."""
    assert set(layer_config.LAYER_ARGUMENTS) == {
        "name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size",
        "activity_regularizer"}


# ------------------------------------------------------------------ the export command
EXPORT = [c for c in H.CASES if c.cls in ("export-flags", "export-files")]


@pytest.fixture(scope="module")
def ports():
    holder, busy = H.hold_busy_port()
    with holder:
        yield H.Ports(busy, H.free_port(), H.free_port())


@pytest.mark.parametrize("case", EXPORT, ids=str)
def test_the_export_line_names_the_flag_or_the_file(case, tmp_path, monkeypatch, capsys,
                                                    ports):
    subst = H.substituter(str(tmp_path), ports)
    H.materialize(case, str(tmp_path), subst)
    argv, _ = H.argv_and_env(case, subst)
    monkeypatch.chdir(tmp_path)
    assert export_cli.main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("tfps.export: error: ") and case.expect, line
    for pattern in case.expect:
        assert re.search(pattern, line), (pattern, line)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("argv, start, end", [
    (["--model", "{d}/model.py:needs"], "--model '",
     "': needs(n, m) needs arguments; it is called with none (give it defaults, or set them "
     "with absl flags after --)"),
    (["--out", "{d}/" + "n" * 240], "--out '",
     ": must have names of at most 230 bytes (the filesystem holds 255, and the export is "
     "first written beside it under a longer name); 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...' "
     "has 240"),
], ids=["builder-with-arguments", "name-too-long"])
def test_the_issue_25_export_refusals_in_full(argv, start, end, tmp_path, monkeypatch,
                                              capsys):
    """(The path is quoted cut to 40 characters; the name limit assumes a 255-byte NAME_MAX
    and a host name as long as this one's.)"""
    case = H.Case("x", "export-flags", (), files=tuple({**H.GOOD_RUN, "model.py": H.MODEL}
                                                        .items()), program="export")
    subst = H.substituter(str(tmp_path), H.Ports(0, 0, 0))
    H.materialize(case, str(tmp_path), subst)
    base = {"--model_dir": "{d}/md", "--model": "{d}/model.py:build", "--out": "{d}/out"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    assert export_cli.main([subst(a) for kv in base.items() for a in kv]) == 2
    got = capsys.readouterr().err.strip()
    assert got.startswith("tfps.export: error: " + start), got
    if "names of at most" in end:  # the room left depends on this host's name and pid
        end = re.sub(r"at most \d+ bytes", "at most", end)
        got = re.sub(r"at most \d+ bytes", "at most", got)
    assert got.endswith(end), got


def test_a_function_that_needs_arguments_is_told_by_its_signature():
    assert arguments.takes(lambda model, batch: 0, ("model", "batch")) is True
    assert arguments.takes(lambda batch: 0, ("model", "batch")) is False
    assert arguments.takes(print, ("model", "batch")) in (True, None)  # a builtin
    assert inspect.signature(arguments.check).parameters  # keyword arguments by name
