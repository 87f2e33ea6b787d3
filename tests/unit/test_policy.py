"""Sizing rules (`tfps.policy`) and argument checks (`tfps.validate`, `TrainerOptions`): pure."""

from __future__ import annotations

import math

import pytest

from tfps import errors, policy, validate
from tfps.train.options import TrainerOptions


@pytest.mark.parametrize("per_step, overhead, expected", [
    (0.001, 0.004, 80),       # 4 ms of scheduling over 1 ms steps: 80 steps keep it at 5 %
    (0.001, 0.0, 1),          # no overhead: no packing needed
    (0.010, 0.001, 2),        # a slow step: packing barely matters
    (0.0001, 0.004, 800),     # a fast step
    (0.00001, 0.004, 1000),   # capped at MAX_STEPS_PER_CLOSURE
    (0.004, 1.0, 250),        # capped at about one second per closure
])
def test_packing_keeps_overhead_under_5_percent_and_closures_short(per_step, overhead,
                                                                    expected):
    n = policy.packing(per_step, overhead)
    assert n == expected
    if n not in (1, policy.MAX_STEPS_PER_CLOSURE) and n * per_step < 1.0:
        assert overhead / (n * per_step) <= policy.PACKING_OVERHEAD + 1e-9


def test_packing_from_timings_separates_step_time_from_overhead():
    # 1-step closures take 5 ms, 8-step closures 12 ms: 1 ms/step, 4 ms overhead.
    assert policy.packing_from_timings(0.005, 0.012) == policy.packing(0.001, 0.004) == 80
    assert policy.packing_from_timings(0.005, 0.004) >= 1  # noise: never below one step
    assert not policy.calibration_fits(19, 2) and policy.calibration_fits(20, 2)


def test_steps_per_execution_divides_the_epoch():
    assert policy.steps_per_execution(200, 2) == 25
    assert policy.steps_per_execution(1000, 2) == 100
    assert policy.steps_per_execution(7, 4) == 1
    for steps in (97, 360, 1000):
        assert steps % policy.steps_per_execution(steps, 3) == 0


def test_eval_shards():
    assert policy.eval_shards(2) == 10 and policy.eval_shards(2, num_batches=4) == 4
    with pytest.raises(errors.ConfigError, match="`workers` must be an integer >= 1"):
        policy.eval_shards(0)


@pytest.mark.parametrize("call, message", [
    (lambda: validate.integer("n", True, low=0), "Argument `n` must be an integer >= 0. "
                                                 "Received: n=True"),
    (lambda: validate.integer("n", 10**30, low=1, high=64), "must be an integer in [1, 64]"),
    (lambda: validate.number("lr", math.nan), "must be a finite number"),
    (lambda: validate.number("lr", 0.0, low=0, low_open=True), "must be a finite number > 0"),
    (lambda: validate.boolean("flag", "no"), "must be True or False. Received: flag='no'"),
    (lambda: validate.choice("mode", "On", ("on", "off")), "must be one of 'on', 'off'"),
])
def test_validation_messages(call, message):
    with pytest.raises(errors.ConfigError) as info:
        call()
    assert message in str(info.value)


def test_describe_never_formats_a_huge_value():
    huge = [[0] * 1000] * 1000
    assert validate.describe(huge) == "<list of 1000>"
    assert len(validate.describe("x" * 10**7)) <= 80


@pytest.mark.parametrize("kwargs, message", [
    ({"staleness_aware": "no"}, "`staleness_aware` must be True or False"),
    ({"steps_per_closure": 0}, "`steps_per_closure` must be an integer in"),
    ({"accumulate_steps": 1.5}, "`accumulate_steps` must be an integer in"),
    ({"checkpoint_every": -1}, "`checkpoint_every` must be an integer in"),
    ({"log_every": 10**20}, "`log_every` must be an integer in"),
    ({"progress_bar": "yes"}, "`progress_bar` must be one of 'auto', 'on', 'off'"),
    ({"eval_shards": 0}, "`eval_shards` must be an integer in"),
])
def test_trainer_options_refuse_bad_values(kwargs, message):
    with pytest.raises(errors.ConfigError, match=message.replace("(", r"\(")):
        TrainerOptions(**kwargs)
