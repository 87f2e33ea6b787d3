"""Where a unit's records are read and parsed, inside the closure that trains on them: the two
modes of `tfps.data.FileInput`, as types.

* `Shard()`: on the training worker that runs the closure. No extra process.
* `Service(dispatcher)`: on the data workers of TF's tf.data service; the training worker only
  receives parsed records. Each closure run reads its unit through a job of its own (an
  anonymous job, so a closure that TF's coordinator re-runs after a worker died reads the
  whole unit again through a new job), in ``distributed_epoch`` mode: the unit's file segments
  are split among the data workers as they ask for work.

Both return the unit's records parsed, in the unit's order: one tensor per parsed feature,
every record of the unit in its rows. The tf.data service promises at most once: the elements
a data worker had not sent when it was lost are lost (``ShardingPolicy.DYNAMIC``,
tensorflow/python/data/experimental/ops/data_service_ops.py; measured in docs/data.md). So
every record carries its position in the unit, the closure checks that every position came
exactly once, and when one did not it reads the unit on the training worker instead (and says
so on its stderr, with the count): the Trainer trains on every record of the unit, once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections.abc import Callable

from tfps import _tf
from tfps.cluster.model import DATA_SERVICE_ENV
from tfps.errors import ConfigError

tf = _tf.require()

__all__ = ["Reader", "Service", "Shard", "read_local"]

# Records per element a data worker sends (parsed together): big enough that the per-element
# cost of the service (one RPC) is small, small enough that a unit spreads over workers.
_SERVICE_CHUNK = 1024


def _segments(paths, firsts, counts):
    """The unit's segments, with each one's first position in the unit."""
    offsets = tf.cumsum(counts, exclusive=True)
    return tf.data.Dataset.from_tensor_slices((paths, firsts, counts, offsets)).filter(
        lambda p, f, c, o: c > 0)


def read_local(fmt, parse_fn: Callable, paths, firsts, counts):
    """The unit's records read and parsed here, in order (a check fails if a file holds fewer
    records than it was counted with: it changed since)."""
    total = tf.reduce_sum(counts)
    records = _segments(paths, firsts, counts).flat_map(
        lambda p, f, c, o: fmt.dataset(p, f, c)).batch(total).take(1).get_single_element()
    check = tf.debugging.assert_equal(
        tf.size(records, tf.int64), total,
        message="tfps.data: a file holds fewer records than when it was counted (it changed "
                "during training)")
    with tf.control_dependencies([check]):
        return parse_fn(tf.identity(records))


@dataclasses.dataclass(frozen=True)
class Shard:
    """Each closure reads its unit's records on the training worker that runs it."""

    def resolve(self) -> Shard:
        return self

    def read(self, fmt, parse_fn: Callable, spec, paths, firsts, counts):
        return read_local(fmt, parse_fn, paths, firsts, counts)


@dataclasses.dataclass(frozen=True)
class Service:
    """Each closure's unit is read and parsed by the data workers of TF's tf.data service.

    Args:
      dispatcher: the dispatcher's address (``grpc://host:port`` or ``host:port``); None:
        ``TFPS_DATA_SERVICE``, which ``tfps-launch --data-workers N`` sets for the chief.
        The data workers must see the files at the same paths (a shared filesystem).
    """

    dispatcher: str | None = None

    def resolve(self) -> Service:
        """This mode with its dispatcher known (on the chief, before any closure)."""
        address = self.dispatcher or os.environ.get(DATA_SERVICE_ENV)
        if not address:
            raise ConfigError(
                f"Service mode needs TF's tf.data service: run under `tfps-launch "
                f"--data-workers N` (it sets {DATA_SERVICE_ENV}), or pass "
                f"Service(dispatcher='host:port'). Received: dispatcher=None and no "
                f"{DATA_SERVICE_ENV}")
        if "://" not in address:
            address = "grpc://" + address
        return Service(address)

    def read(self, fmt, parse_fn: Callable, spec, paths, firsts, counts):
        total = tf.reduce_sum(counts)

        def positioned(p, f, c, o):
            return tf.data.Dataset.zip((tf.data.Dataset.range(o, o + c), fmt.dataset(p, f, c)))

        remote = _segments(paths, firsts, counts).flat_map(positioned).batch(_SERVICE_CHUNK)
        remote = remote.map(lambda pos, rec: (pos, parse_fn(rec)))  # on the data workers
        with warnings.catch_warnings():  # TF reads the options in graph mode, and says so
            warnings.filterwarnings("ignore", "To make it possible to preserve tf.data options")
            received = remote.apply(tf.data.experimental.service.distribute(
                "distributed_epoch", self.dispatcher, compression=None)).rebatch(total)
        element = iter(received).get_next_as_optional()

        def delivered():
            positions, parsed = element.get_value()
            order = tf.argsort(positions)
            whole = tf.cond(  # every position once (compared only when the counts match)
                tf.equal(tf.size(positions, tf.int64), total),
                lambda: tf.reduce_all(tf.equal(tf.gather(positions, order), tf.range(total))),
                lambda: tf.constant(False))
            return whole, tf.size(positions, tf.int64), tf.nest.map_structure(
                lambda t: tf.gather(t, order), parsed)

        def nothing():
            return (tf.constant(False), tf.constant(0, tf.int64),
                    tf.nest.map_structure(lambda s: tf.zeros([0, *s.shape[1:]], s.dtype), spec))

        whole, got, parsed = tf.cond(element.has_value(), delivered, nothing)

        def read_here():
            note = tf.print("tfps.data: the tf.data service delivered", got, "of", total,
                            "records of a unit (a data worker was lost: it lost",
                            total - got, "records); reading the unit here instead",
                            output_stream=sys.stderr)
            with tf.control_dependencies([note]):
                return read_local(fmt, parse_fn, paths, firsts, counts)

        return tf.cond(whole, lambda: parsed, read_here)


Reader = Shard | Service
