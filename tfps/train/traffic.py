"""Parameter traffic per training step, counted from the traced closure's graph.

Machine load moves every wall-clock figure; these counts it cannot move. For a closure as TF
traced it, they say per training step: how many tensors (and bytes) cross from the worker to
the ps tasks and back, how many ops run on ps, and how many dataset elements are fetched.

How it counts, following TF's own placement rules (``common_runtime/placer.cc``,
``graph/graph_partition.cc``):

* an op that takes a resource (a variable's handle) runs where the resource lives: reads,
  gathers and optimizer updates of a ps variable run on that ps; every other op (control flow
  included: a loop passes handles, not values) runs on the worker, except an op with no
  inputs (a constant), which TF places with its consumers when they all sit on one device;
* a tensor crosses once per (tensor, destination device) when its producer and a consumer sit
  on different devices, one of them a ps (graph partitioning adds one Send/Recv pair per such
  edge); its bytes are its static size (dimensions unknown at trace time are counted in
  `unsized`);
* a ``tf.while_loop`` body counts once per iteration: per step, the closure's counts are
  ``(outside + trips × body) / steps``.

>>> Traffic(to_ps=(2, 8.0), from_ps=(1, 4.0), ps_ops=3, fetches=1).as_dict()["tensors"]
3.0
"""

from __future__ import annotations

import collections
import dataclasses

from tfps import _tf

tf = _tf.require()

__all__ = ["Traffic", "count"]

_WORKER = "worker"
_LOOPS = ("While", "StatelessWhile")
_BRANCHES = ("If", "StatelessIf", "Case", "StatelessCase")
_CALLS = ("PartitionedCall", "StatefulPartitionedCall")
_NESTING = _LOOPS + _BRANCHES + _CALLS


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Per training step: ``(tensors, bytes)`` to and from the ps tasks, ops on ps, fetches.

    Attributes:
      to_ps: tensors and bytes sent from the worker to the ps tasks.
      from_ps: tensors and bytes sent from the ps tasks to the worker.
      ps_ops: ops run on ps tasks.
      fetches: per-worker dataset elements fetched.
      unsized: tensors crossing whose size is not known at trace time (not in the bytes).
      loop: the counts of one iteration of the closure's loop alone (what repeats per step or
        micro-batch, without the once-per-closure part), or None without a loop.
    """

    to_ps: tuple[float, float]
    from_ps: tuple[float, float]
    ps_ops: float
    fetches: float
    unsized: float = 0.0
    loop: "Traffic | None" = None

    @property
    def tensors(self) -> float:
        return self.to_ps[0] + self.from_ps[0]

    @property
    def bytes(self) -> float:
        return self.to_ps[1] + self.from_ps[1]

    def as_dict(self) -> dict:
        return {"tensors": self.tensors, "bytes": self.bytes,
                "tensors_to_ps": self.to_ps[0], "bytes_to_ps": self.to_ps[1],
                "tensors_from_ps": self.from_ps[0], "bytes_from_ps": self.from_ps[1],
                "ps_ops": self.ps_ops, "fetches": self.fetches, "unsized": self.unsized}

    def __str__(self) -> str:
        return (f"per step: {self.to_ps[0]:g} tensors ({self.to_ps[1]:,.0f} B) worker->ps, "
                f"{self.from_ps[0]:g} ({self.from_ps[1]:,.0f} B) ps->worker, "
                f"{self.ps_ops:g} ops on ps, {self.fetches:g} dataset fetches")


def _is_ps(device: str) -> bool:
    return "/job:ps" in device


def _size(tensor) -> int | None:
    n = tensor.shape.num_elements() if tensor.shape.is_fully_defined() else None
    return None if n is None or tensor.dtype == tf.variant else n * tensor.dtype.size


class _Counter:
    """Walks a graph and its loop bodies; `totals` are per run of the outer graph."""

    def __init__(self, trips: int):
        self.trips = trips
        self.totals = collections.Counter()
        self.loop_totals: collections.Counter | None = None  # one iteration of the top loop
        self.crossings: list = []  # (direction, tensor, consumer op type, bytes, weight)

    def walk(self, graph, input_devices: dict, weight: float) -> None:
        devices = dict(input_devices)  # tensor name -> device of its producer
        for external, internal in getattr(graph, "captures", ()):
            device = getattr(external, "device", "") or ""
            devices.setdefault(internal.name, device if _is_ps(device) else _WORKER)
        functions = _tf.function_graphs(graph)
        ops = graph.get_operations()
        placed: dict[str, str] = {}
        for op in ops:  # ops with a ps resource input run on that ps
            resources = [devices.get(t.name, _WORKER) for t in op.inputs
                         if t.dtype == tf.resource]
            # Control flow runs where the closure runs; it passes handles, not data.
            ps = [d for d in resources if _is_ps(d)] if op.type not in _NESTING else []
            placed[op.name] = ps[0] if ps else _WORKER
            for out in op.outputs:
                devices[out.name] = (placed[op.name] if out.dtype != tf.resource or ps
                                     else devices.get(out.name, _WORKER))
            if op.type == "Placeholder":
                placed[op.name] = devices.get(op.outputs[0].name, _WORKER)
        consumers = collections.defaultdict(set)
        for op in ops:
            for t in op.inputs:
                consumers[t.op.name].add(placed[op.name])
        for op in ops:  # a constant sits with its consumers when they share a device
            if not op.inputs and op.type != "Placeholder" and len(consumers[op.name]) == 1:
                placed[op.name] = next(iter(consumers[op.name]))
                for out in op.outputs:
                    devices[out.name] = placed[op.name]
        sent = set()
        for op in ops:
            here = placed[op.name]
            # An op that only passes a handle along (Identity of a resource) does no work.
            if _is_ps(here) and not (op.outputs and all(o.dtype == tf.resource
                                                         for o in op.outputs)):
                self.totals["ps_ops"] += weight
            if "IteratorGetNext" in op.type or op.type == "MultiDeviceIteratorGetNextFromShard":
                self.totals["fetches"] += weight
            for t in op.inputs:
                source = devices.get(t.name, _WORKER)
                if t.dtype == tf.resource or source == here or (t.name, here) in sent:
                    continue
                if _is_ps(source) or _is_ps(here):
                    sent.add((t.name, here))
                    way = "to_ps" if _is_ps(here) else "from_ps"
                    size = _size(t)
                    self.totals[f"{way}_tensors"] += weight
                    self.crossings.append((way, t.name, op.type, size, weight))
                    if size is None:
                        self.totals["unsized"] += weight
                    else:
                        self.totals[f"{way}_bytes"] += weight * size
            self._nested(op, devices, functions, weight)

    def _nested(self, op, devices, functions, weight) -> None:
        if op.type in _LOOPS:
            names, inputs, inner = [op.get_attr("body").name], list(op.inputs), self.trips
        elif op.type in _BRANCHES:  # the costlier branch counts (an upper bound)
            attr = "branches" if "Case" in op.type else None
            names = ([f.name for f in op.get_attr(attr)] if attr else
                     [op.get_attr("then_branch").name, op.get_attr("else_branch").name])
            inputs, inner = list(op.inputs)[1:], 1
        elif op.type in _CALLS:
            names, inputs, inner = [op.get_attr("f").name], list(op.inputs), 1
        else:
            return
        best, best_crossings = None, []
        for name in names:
            body = functions.get(name)
            if body is None:
                continue
            counter = _Counter(self.trips)
            mapping = {b.name: (devices.get(t.name, _WORKER) if t.dtype == tf.resource
                                else _WORKER) for b, t in zip(body.inputs, inputs)}
            counter.walk(body, mapping, 1.0)
            if best is None or counter.totals["ps_ops"] > best["ps_ops"]:
                best, best_crossings = counter.totals, counter.crossings
        if op.type in _LOOPS and best is not None and self.loop_totals is None:
            self.loop_totals = collections.Counter(best)
        for key, value in (best or {}).items():
            self.totals[key] += value * inner * weight
        self.crossings += [(way, t, consumer, size, w * inner * weight)
                           for way, t, consumer, size, w in best_crossings]


def _traffic(totals, per: float, loop=None) -> Traffic:
    return Traffic(to_ps=(totals["to_ps_tensors"] * per, totals["to_ps_bytes"] * per),
                   from_ps=(totals["from_ps_tensors"] * per, totals["from_ps_bytes"] * per),
                   ps_ops=totals["ps_ops"] * per, fetches=totals["fetches"] * per,
                   unsized=totals["unsized"] * per, loop=loop)


def count(graph, steps: int, trips: int) -> Traffic:
    """The per-step `Traffic` of a traced closure `graph` that runs `steps` training steps,
    its loop bodies `trips` times (``steps`` for a per-step loop, ``K - 1`` for accumulation)."""
    counter = _Counter(trips)
    counter.walk(graph, {}, 1.0)
    loop = None if counter.loop_totals is None else _traffic(counter.loop_totals, 1.0)
    return _traffic(counter.totals, 1.0 / max(steps, 1), loop)
