"""Trainer modes (`tfps.train.modes`) and `TrainerOptions`: every mode validates itself, the
shorthand keywords resolve into one mode, and every clash is one line naming both. Pure."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tfps import errors
from tfps.train.modes import MODES, Accumulate, LocalSteps, PerStep, StaleReads
from tfps.train.options import TrainerOptions


@pytest.mark.parametrize("kwargs, mode", [
    ({}, PerStep()),
    ({"steps_per_closure": 10}, PerStep(10)),
    ({"accumulate_steps": 4}, Accumulate(4)),
    ({"read_every": 3}, StaleReads(3)),
    ({"local_steps": 100}, LocalSteps(100)),
    ({"local_steps": 8, "outer_learning_rate": 0.5, "outer_momentum": 0.9},
     LocalSteps(8, outer_learning_rate=0.5, outer_momentum=0.9)),
    # 1 (or None) is "not this mode": the examples pass their flags' defaults as they are.
    ({"accumulate_steps": 1, "read_every": 1, "local_steps": 1}, PerStep()),
    ({"mode": LocalSteps(1)}, LocalSteps(1)),
    ({"mode": PerStep(5), "steps_per_closure": 5}, PerStep(5)),
])
def test_shorthand_resolves_into_one_mode(kwargs, mode):
    assert TrainerOptions(**kwargs).mode == mode


@pytest.mark.parametrize("kwargs, names", [
    ({"mode": LocalSteps(100), "steps_per_closure": 10}, ("steps_per_closure", "mode")),
    ({"mode": Accumulate(4), "steps_per_closure": 4}, ("steps_per_closure", "mode")),
    ({"local_steps": 100, "steps_per_closure": 10}, ("steps_per_closure", "mode")),
    ({"mode": PerStep(5), "steps_per_closure": 10}, ("steps_per_closure", "mode")),
    ({"outer_learning_rate": 0.5}, ("outer_learning_rate", "local_steps")),
    ({"outer_momentum": 0.9}, ("outer_momentum", "local_steps")),
    ({"accumulate_steps": 4, "outer_momentum": 0.9}, ("outer_momentum", "local_steps")),
    ({"mode": StaleReads(2), "outer_learning_rate": 0.5}, ("outer_learning_rate", "mode")),
    ({"mode": LocalSteps(4), "outer_learning_rate": 0.5}, ("outer_learning_rate", "mode")),
    ({"mode": LocalSteps(4), "local_steps": 4}, ("mode", "local_steps")),
    ({"accumulate_steps": 2, "read_every": 2}, ("accumulate_steps", "read_every")),
    ({"read_every": 2, "local_steps": 2}, ("read_every", "local_steps")),
])
def test_clashes_are_one_line_naming_both(kwargs, names):
    with pytest.raises(errors.ConfigError) as info:
        TrainerOptions(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert f"`{name}`" in message, (name, message)
    assert "Received:" in message


@pytest.mark.parametrize("make, name", [
    (lambda: PerStep(0), "PerStep.steps_per_closure"),
    (lambda: PerStep(1.5), "PerStep.steps_per_closure"),
    (lambda: Accumulate(1), "Accumulate.steps"),
    (lambda: Accumulate(True), "Accumulate.steps"),
    (lambda: StaleReads(1), "StaleReads.every"),
    (lambda: StaleReads("4"), "StaleReads.every"),
    (lambda: LocalSteps(0), "LocalSteps.steps"),
    (lambda: LocalSteps(2**40), "LocalSteps.steps"),
    (lambda: LocalSteps(4, outer_learning_rate=0.0), "LocalSteps.outer_learning_rate"),
    (lambda: LocalSteps(4, outer_learning_rate=math.nan), "LocalSteps.outer_learning_rate"),
    (lambda: LocalSteps(4, outer_learning_rate="1"), "LocalSteps.outer_learning_rate"),
    (lambda: LocalSteps(4, outer_momentum=1.0), "LocalSteps.outer_momentum"),
    (lambda: LocalSteps(4, outer_momentum=-0.1), "LocalSteps.outer_momentum"),
    (lambda: TrainerOptions(mode=LocalSteps), "mode"),
    (lambda: TrainerOptions(mode="local"), "mode"),
    (lambda: TrainerOptions(staleness_aware="yes"), "staleness_aware"),
    (lambda: TrainerOptions(stack_steps=0), "stack_steps"),
    (lambda: TrainerOptions(local_steps=0), "local_steps"),
])
def test_every_mode_validates_itself(make, name):
    with pytest.raises(errors.ConfigError) as info:
        make()
    assert f"Argument `{name}`" in str(info.value)


@pytest.mark.parametrize("mode", [PerStep(), PerStep(7), Accumulate(3), StaleReads(2),
                                  LocalSteps(5, outer_momentum=0.5)])
def test_modes_are_frozen_and_describe_themselves(mode):
    with pytest.raises(dataclasses.FrozenInstanceError):
        mode.exact = False
    assert isinstance(mode.describe(), str) and mode.describe()
    assert mode.closure_steps == (None if mode == PerStep() else
                                  getattr(mode, "steps_per_closure", None) or
                                  getattr(mode, "steps", None) or mode.every)


def test_only_per_step_reads_every_step():
    assert [m.reads_every_step for m in MODES] == [True, False, False, False]
    assert [m.exact for m in MODES] == [True, False, False, False]


def test_outer_rate_defaults_to_the_mean_of_the_workers():
    assert LocalSteps(4).outer_rate(4) == 0.25
    assert LocalSteps(4, outer_learning_rate=0.7).outer_rate(4) == 0.7


@pytest.mark.parametrize("options, workers, expected", [
    (TrainerOptions(), 4, False),
    (TrainerOptions(local_steps=10), 1, False),
    (TrainerOptions(local_steps=10), 2, True),
    (TrainerOptions(local_steps=10, staleness_aware=False), 2, False),
    (TrainerOptions(staleness_aware=True), 1, True),
])
def test_staleness_scaling_default(options, workers, expected):
    assert options.staleness_for(workers) is expected


def test_options_replace_keeps_the_mode():
    options = TrainerOptions(local_steps=10, log_every=5)
    again = dataclasses.replace(options, log_every=7)
    assert again.mode == LocalSteps(10) and again.log_every == 7
