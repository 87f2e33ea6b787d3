"""`tfps.layers.TableConfig`: what a `DynamicEmbedding` accepts, checked without TensorFlow.
Every bad value and every contradiction is one `ConfigError` line naming the argument(s) and
the value(s)."""

from __future__ import annotations

import math

import pytest

from tfps.errors import ConfigError
from tfps.layers.config import DEFAULT_EVICT_EVERY, TableConfig


def test_defaults_and_what_they_mean():
    config = TableConfig(dim=16)
    assert (config.key_dtype, config.min_count, config.policy) == ("int64", 1, None)
    assert not config.evicts and config.eviction_interval is None
    assert config.default_value == (0.0,) * 16
    assert config.eviction_policy == "lru"


@pytest.mark.parametrize("kwargs, interval", [
    ({"max_rows_per_shard": 10}, DEFAULT_EVICT_EVERY),
    ({"ttl_steps": 300}, 300),                      # never further apart than the TTL
    ({"ttl_steps": 5000}, DEFAULT_EVICT_EVERY),
    ({"ttl_steps": 5000, "evict_every": 50}, 50),
])
def test_eviction_interval(kwargs, interval):
    assert TableConfig(dim=4, **kwargs).eviction_interval == interval


@pytest.mark.parametrize("key_dtype, name", [("int64", "int64"), ("string", "string"),
                                             (str, "string"), (bytes, "string")])
def test_key_dtypes(key_dtype, name):
    assert TableConfig(dim=4, key_dtype=key_dtype).key_dtype == name


def test_a_callable_initializer_and_a_default_row():
    def init(shape, dtype):
        return shape

    config = TableConfig(dim=2, initializer=init, default_value=[0.5, -1])
    assert config.initializer is init and config.default_value == (0.5, -1.0)


@pytest.mark.parametrize("kwargs, needle", [
    ({"dim": 0}, "Argument `dim` must be an integer in [1, 65536]. Received: dim=0"),
    ({"dim": -1}, "dim=-1"),
    ({"dim": 1.5}, "dim=1.5"),
    ({"dim": True}, "dim=True"),
    ({"dim": 70000}, "dim=70000"),
    ({"dim": 4, "key_dtype": "float32"},
     "Argument `key_dtype` must be 'int64' or 'string'. Received: key_dtype='float32'"),
    ({"dim": 4, "key_dtype": 5}, "key_dtype=5"),
    ({"dim": 4, "min_count": 0},
     "Argument `min_count` must be an integer in [1, 2147483648]. Received: min_count=0"),
    ({"dim": 4, "min_count": -3}, "min_count=-3"),
    ({"dim": 4, "min_count": "2"}, "min_count='2'"),
    ({"dim": 4, "max_rows_per_shard": 0}, "max_rows_per_shard=0"),
    ({"dim": 4, "ttl_steps": 0}, "ttl_steps=0"),
    ({"dim": 4, "max_rows_per_shard": 5, "policy": "mru"},
     "Argument `policy` must be one of 'lru', 'lfu'. Received: policy='mru'"),
    ({"dim": 4, "max_rows_per_shard": 5, "evict_every": 0}, "evict_every=0"),
    ({"dim": 4, "initializer": "glorot"}, "initializer='glorot'"),
    ({"dim": 4, "init_scale": 0}, "init_scale=0"),
    ({"dim": 4, "init_scale": math.nan}, "init_scale=nan"),
    ({"dim": 2, "default_value": [1.0]},
     "Argument `default_value` must be a finite float or a list of dim=2 finite floats. "
     "Received: default_value=[1.0]"),
    ({"dim": 2, "default_value": [1.0, math.inf]}, "default_value=[1.0, inf]"),
    ({"dim": 2, "default_value": "zero"}, "default_value='zero'"),
    ({"dim": 2, "seed": -1}, "seed=-1"),
])
def test_bad_values(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        TableConfig(**kwargs)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, needle", [
    ({"policy": "lfu"}, "Arguments `policy` and `max_rows_per_shard` contradict each other: "
                        "a policy orders evictions under a row cap, and there is none. "
                        "Received: policy='lfu', max_rows_per_shard=None"),
    ({"evict_every": 10}, "Arguments `evict_every`, `max_rows_per_shard` and `ttl_steps` "
                          "contradict each other"),
    ({"ttl_steps": 100, "evict_every": 500},
     "evictions further apart than the TTL cannot honour it. Received: evict_every=500, "
     "ttl_steps=100"),
])
def test_eviction_settings_that_contradict_each_other(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        TableConfig(dim=4, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)
