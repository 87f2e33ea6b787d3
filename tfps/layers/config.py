"""The settings of a `DynamicEmbedding`, checked up front. Pure: no TensorFlow.

Every bad value, and every pair of settings that contradict each other, raises
`tfps.errors.ConfigError` in one line naming the argument(s) and the value(s):

>>> TableConfig(dim=16).key_dtype
'int64'
>>> TableConfig(dim=0)
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `dim` must be an integer in [1, 65536]. Received: dim=0
>>> TableConfig(dim=8, policy="lfu")
Traceback (most recent call last):
...
tfps.errors.ConfigError: Arguments `policy` and `max_rows_per_shard` contradict each other: a policy orders evictions under a row cap, and there is none. Received: policy='lfu', max_rows_per_shard=None
"""  # noqa: E501 - a doctest shows an error line whole

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

from tfps import validate
from tfps.errors import ConfigError

__all__ = ["INITIALIZERS", "KEY_DTYPES", "LAYER_ARGUMENTS", "POLICIES", "TableConfig",
           "check_layer_arguments"]

KEY_DTYPES = ("int64", "string")
POLICIES = ("lru", "lfu")
# Initializers computed from each key's hash: a row starts at the same value in every run,
# shard layout and restart (see `tfps.layers._tables`); or pass a callable(shape, dtype).
INITIALIZERS = ("zeros", "uniform", "normal")
# Steps between evictions when the table has a cap or a TTL and `evict_every` is not given.
DEFAULT_EVICT_EVERY = 1000
# Widest row: 64 Ki floats (256 KiB) per id is already more than any embedding needs.
_MAX_DIM = 1 << 16
# Counts and steps stay well inside int64 and float32-exact ranges.
_MAX_COUNT = 1 << 31
_MAX_STEPS = 10**12
_MAX_ROWS = 1 << 40
# The scale and seed of the hash initializers when not given.
_DEFAULT_SCALE = 0.05
_DEFAULT_SEED = 0
# Keras layer arguments a DynamicEmbedding takes, beside its own: what each means for it.
# Every other Keras argument (``weights``, ``input_dim``, ``autocast``, ``dynamic``, ...) is
# refused by name: it would change nothing (the layer has no weights, no vocabulary size,
# no float inputs) or means something the layer does not do.
LAYER_ARGUMENTS = {
    "name": "the layer's name (and its tables')",
    "trainable": "False freezes the table: lookups read, never count, admit, update or evict",
    "dtype": "'float32' only: the rows and the output are float32",
    "input_shape": "the shape of the ids (a first layer of a Sequential model)",
    "batch_input_shape": "the same, with the batch dimension",
    "batch_size": "the batch dimension of input_shape",
    "activity_regularizer": "a loss on the output (add model.losses to the loss)",
}
# The dtypes (and Keras dtype policies) a DynamicEmbedding computes in.
_LAYER_DTYPES = ("float32",)


def _dtype_name(value: Any) -> Any:
    """``"int64"`` for "int64", tf.int64 or np.int64; other values as they are."""
    name = getattr(value, "name", None)  # a tf.DType has .name; np.dtype too
    if isinstance(name, str):
        return name
    if isinstance(value, type) and hasattr(value, "__name__"):
        return {"str": "string", "bytes": "string"}.get(value.__name__, value.__name__)
    return value


@dataclasses.dataclass(frozen=True)
class TableConfig:
    """What a `DynamicEmbedding` table is: its rows, admission and eviction.

    Attributes:
      dim: embedding columns.
      key_dtype: ``"int64"`` (any int64 value; int32 ids are widened) or ``"string"``.
      min_count: sightings before an id gets its own row; before that it reads the default row
        and the table does not grow. 1 admits every id at first sight.
      max_rows_per_shard: row cap per shard (per ps task), enforced at each eviction; None for
        no cap. Ids waiting for admission (fewer than `min_count` sightings) are capped at the
        same number per shard, by the same policy.
      ttl_steps: rows (and waiting ids) not seen for more than this many steps are evicted;
        None for no TTL.
      policy: ``"lru"`` (least recently seen first) or ``"lfu"`` (fewest sightings first): which
        rows the cap evicts. Only with `max_rows_per_shard`; default ``"lru"``.
      evict_every: steps between evictions (run from the chief, between closures; also before
        every checkpoint and at the end of training). Only with a cap or a TTL; default
        ``min(1000, ttl_steps)``.
      initializer: ``"zeros"``, ``"uniform"`` (in ±`init_scale`, Keras's Embedding default),
        ``"normal"`` (stddev `init_scale`), computed from the key's hash and `seed`; or a
        callable ``(shape, dtype) -> tensor`` (a Keras initializer), called on the ps for the
        rows admitted.
      init_scale: the scale of ``"uniform"`` and ``"normal"`` (default 0.05); refused with an
        initializer it does not scale (``"zeros"``, a callable).
      default_value: what ids without a row read: a float, or `dim` floats.
      seed: seed of the hash initializers (default 0); refused with an initializer it does
        not seed (``"zeros"``, a callable: seed the callable itself).
    """

    dim: int
    key_dtype: Any = "int64"
    min_count: int = 1
    max_rows_per_shard: int | None = None
    ttl_steps: int | None = None
    policy: str | None = None
    evict_every: int | None = None
    initializer: str | Callable = "uniform"
    init_scale: float | None = None
    default_value: Any = 0.0
    seed: int | None = None

    def __post_init__(self):
        validate.integer("dim", self.dim, low=1, high=_MAX_DIM)
        key_dtype = _dtype_name(self.key_dtype)
        if key_dtype not in KEY_DTYPES:
            raise validate.fail("key_dtype", self.key_dtype, "'int64' or 'string'")
        object.__setattr__(self, "key_dtype", key_dtype)
        validate.integer("min_count", self.min_count, low=1, high=_MAX_COUNT)
        validate.integer("max_rows_per_shard", self.max_rows_per_shard, low=1, high=_MAX_ROWS,
                         allow_none=True)
        validate.integer("ttl_steps", self.ttl_steps, low=1, high=_MAX_STEPS, allow_none=True)
        if self.policy is not None:
            validate.choice("policy", self.policy, POLICIES)
            if self.max_rows_per_shard is None:
                raise _contradiction(
                    ("policy", "max_rows_per_shard"), (self.policy, None),
                    "a policy orders evictions under a row cap, and there is none")
        validate.integer("evict_every", self.evict_every, low=1, high=_MAX_STEPS,
                         allow_none=True)
        if self.evict_every is not None and not self.evicts:
            raise _contradiction(
                ("evict_every", "max_rows_per_shard", "ttl_steps"), (self.evict_every, None, None),
                "there is nothing to evict without a row cap or a TTL")
        if self.evict_every is not None and self.ttl_steps is not None and \
                self.evict_every > self.ttl_steps:
            raise _contradiction(
                ("evict_every", "ttl_steps"), (self.evict_every, self.ttl_steps),
                "evictions further apart than the TTL cannot honour it")
        self._check_initializer()
        object.__setattr__(self, "default_value", self._default_row())

    def _check_initializer(self) -> None:
        init = self.initializer
        if isinstance(init, type):  # tf.keras.initializers.RandomNormal, not RandomNormal()
            raise validate.fail("initializer", init, "one of 'zeros', 'uniform', 'normal' or an "
                                                     "initializer instance (not a class)")
        if isinstance(init, str) or not callable(init):
            validate.choice("initializer", init, INITIALIZERS)
        elif _takes_shape_and_dtype(init) is False:
            raise validate.fail("initializer", init, "a callable taking (shape, dtype)")
        scaled = init in ("uniform", "normal")
        for name, default, check in (
                ("init_scale", _DEFAULT_SCALE,
                 lambda v: validate.number("init_scale", v, low=0, low_open=True, high=1e3)),
                ("seed", _DEFAULT_SEED,
                 lambda v: validate.integer("seed", v, low=0, high=(1 << 63) - 1))):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, default if scaled else None)
                continue
            check(value)
            if not scaled:
                shown = "a callable" if callable(init) else repr(init)
                raise _contradiction(
                    (name, "initializer"), (value, init),
                    f"{name} applies to the hash initializers 'uniform' and 'normal' only, "
                    f"not to {shown}")

    def _default_row(self) -> tuple[float, ...]:
        value = self.default_value
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = [value] * self.dim
        try:
            row = tuple(value)
        except TypeError:
            row = None
        if row is None or len(row) != self.dim or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                and abs(v) <= 1e6 for v in row):
            raise validate.fail("default_value", self.default_value,
                                f"a finite float or a list of dim={self.dim} finite floats")
        return tuple(float(v) for v in row)

    @property
    def evicts(self) -> bool:
        """True when the table has a row cap or a TTL."""
        return self.max_rows_per_shard is not None or self.ttl_steps is not None

    @property
    def eviction_interval(self) -> int | None:
        """Steps between evictions (None: the table never evicts)."""
        if not self.evicts:
            return None
        if self.evict_every is not None:
            return self.evict_every
        return min(DEFAULT_EVICT_EVERY, self.ttl_steps or DEFAULT_EVICT_EVERY)

    @property
    def eviction_policy(self) -> str:
        return self.policy or "lru"


def _takes_shape_and_dtype(fn) -> bool | None:
    """Whether ``fn(shape, dtype)`` binds (None: no signature to read, not judged)."""
    try:
        inspect.signature(fn).bind("shape", "dtype")
    except TypeError:
        return False
    except ValueError:
        return None
    return True


def _dtype_policy_name(value: Any) -> Any:
    """The dtype a Keras ``dtype`` argument computes in: a name, a DType, a dtype policy
    object or its serialized dict; other values as they are."""
    if isinstance(value, dict):
        config = value.get("config")
        return config.get("name") if isinstance(config, dict) else value
    name = getattr(value, "name", None)
    if isinstance(name, str) and hasattr(value, "compute_dtype"):  # a policy object
        return name
    return _dtype_name(value)


def check_layer_arguments(kwargs: dict) -> None:
    """Refuses the Keras layer arguments of a `DynamicEmbedding` that it would not honour:
    one not in `LAYER_ARGUMENTS`, a ``dtype`` other than float32, a ``trainable`` that is
    not a bool, a ``name`` that is not a string."""
    for key, value in kwargs.items():
        if key not in LAYER_ARGUMENTS:
            raise ConfigError(
                f"Argument `{str(key)[:40]}` is not one a DynamicEmbedding honours (it takes "
                f"its own and {', '.join(LAYER_ARGUMENTS)}). Received: {str(key)[:40]}="
                f"{validate.describe(value)}")
    if kwargs.get("dtype") is not None and _dtype_policy_name(kwargs["dtype"]) not in \
            _LAYER_DTYPES:
        raise validate.fail("dtype", kwargs["dtype"],
                            "'float32' or None (the rows and the output are float32)")
    if "trainable" in kwargs:
        validate.boolean("trainable", kwargs["trainable"])
    name = kwargs.get("name")
    if name is not None and (not isinstance(name, str) or not name or len(name) > 200):
        raise validate.fail("name", name, "a non-empty string of at most 200 characters")


def _contradiction(names: tuple, values: tuple, why: str) -> ConfigError:
    listed = ", ".join(f"`{n}`" for n in names[:-1]) + f" and `{names[-1]}`"
    received = ", ".join(f"{n}={validate.describe(v)}" for n, v in zip(names, values))
    return ConfigError(f"Arguments {listed} contradict each other: {why}. Received: {received}")
