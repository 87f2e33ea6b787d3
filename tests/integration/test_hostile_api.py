"""Hostile arguments to the Python API that needs TensorFlow (issue 16): schedules, the
partitioner, in-process clusters. Each must raise `tfps.errors.ConfigError` at once, naming
the argument and the value, never a TensorFlow error at the first call. (The API that needs
no TensorFlow is in ``tests/unit/test_hostile.py``.)"""

from __future__ import annotations

import time

import pytest

import tfps
from tfps import schedules
from tfps.errors import ConfigError

BAD = {
    "cosine-decay-steps-2**70": (lambda: schedules.get("cosine", initial_learning_rate=0.1,
                                                       decay_steps=2**70),
                                 "decay_steps", "1180591620717411303424"),
    "piecewise-empty-boundaries": (lambda: schedules.get("piecewise", boundaries=[],
                                                         values=[0.1]), "boundaries", "list"),
    "piecewise-boundary-2**70": (lambda: schedules.get("piecewise", boundaries=[2**70],
                                                       values=[0.1, 0.01]), "boundaries", ""),
    "piecewise-boundaries-bools": (lambda: schedules.get("piecewise", boundaries=[True],
                                                         values=[0.1, 0.01]), "boundaries", ""),
    "num-workers-10**400": (lambda: schedules.get("constant", initial_learning_rate=0.1,
                                                  num_workers=10**400), "num_workers", "1000"),
    "num-workers-10**30": (lambda: schedules.get("constant", initial_learning_rate=0.1,
                                                 num_workers=10**30), "num_workers", "1000"),
    "lr-10**400": (lambda: schedules.get("constant", initial_learning_rate=10**400),
                   "initial_learning_rate", "1000"),
    "lr-10**39": (lambda: schedules.get("constant", initial_learning_rate=10**39),
                  "initial_learning_rate", "1000"),
    "lr-nan": (lambda: schedules.get("cosine", initial_learning_rate=float("nan"),
                                     decay_steps=10), "initial_learning_rate", "nan"),
    "lr-negative": (lambda: schedules.get("constant", initial_learning_rate=-0.1),
                    "initial_learning_rate", "-0.1"),
    "warmup-2**70": (lambda: schedules.get("constant", initial_learning_rate=0.1,
                                           warmup_steps=2**70), "warmup_steps", "1180"),
    "inverse-sqrt-decay-2**2000": (lambda: schedules.get("inverse_sqrt",
                                                         initial_learning_rate=0.1,
                                                         decay_steps=2**2000),
                                   "decay_steps", ""),
    "exponential-rate-inf": (lambda: schedules.get("exponential", initial_learning_rate=0.1,
                                                   decay_steps=10, decay_rate=float("inf")),
                             "decay_rate", "inf"),
    "polynomial-power-0": (lambda: schedules.get("polynomial", initial_learning_rate=0.1,
                                                 decay_steps=10, power=0), "power", "0"),
    "piecewise-values-huge": (lambda: schedules.get("piecewise", boundaries=[10],
                                                    values=[0.1, 1e300]), "values", "1e+300"),
    "name-10000-chars": (lambda: schedules.get("x" * 10_000), "schedule", "'xxx"),
    "config-with-int-key": (lambda: schedules.get({"schedule": "cosine", 1: 2}),
                            "identifier", "1"),
    "staircase-string": (lambda: schedules.get("exponential", initial_learning_rate=0.1,
                                               decay_steps=10, decay_rate=0.5,
                                               staircase="no"), "staircase", "'no'"),
    "partitioner-num-ps-10**9": (lambda: tfps.make_partitioner(num_ps=10**9), "num_ps",
                                 "1000000000"),
    "partitioner-max-shards-true": (lambda: tfps.make_partitioner(num_ps=2, max_shards=True),
                                    "max_shards", "True"),
    "in-process-cluster-0-ps": (lambda: tfps.in_process_cluster(num_ps=0, num_workers=1),
                                "num_ps", "0"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_argument_is_a_config_error_naming_it(name):
    call, argument, value = BAD[name]
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert f"`{argument}`" in message and value in message, message
    assert len(message.splitlines()) == 1 and len(message) < 400, message
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("kwargs", [
    dict(schedule="cosine", initial_learning_rate=0.1, decay_steps=schedules.MAX_STEPS),
    dict(schedule="piecewise", boundaries=[schedules.MAX_STEPS], values=[0.1, 0.01]),
    dict(schedule="inverse_sqrt", initial_learning_rate=schedules.MAX_RATE,
         decay_steps=schedules.MAX_STEPS, warmup_steps=schedules.MAX_STEPS, num_workers=100_000),
], ids=["cosine", "piecewise", "inverse_sqrt"])
def test_the_largest_accepted_values_give_finite_rates(kwargs):
    """The bounds are where TF still computes: the first call works at the edges."""
    lr = schedules.get(kwargs.pop("schedule"), **kwargs)
    for step in (0, 10, schedules.MAX_STEPS, 2 * schedules.MAX_STEPS):
        value = float(lr(step))
        assert 0 <= value < float("inf"), (step, value)
