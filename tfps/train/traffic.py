"""Parameter traffic per training step, counted from the traced closure's graph.

Machine load moves every wall-clock figure; these counts it cannot move. For a closure as TF
traced it, they say per training step: how many tensors (and bytes) cross from the worker to
the ps tasks and back, how many ops run on ps, and how many dataset elements are fetched.

How it counts, following TF's own placement rules (``common_runtime/placer.cc``,
``graph/graph_partition.cc``):

* an op that takes a resource (a variable's handle) runs where the resource lives: reads,
  gathers and optimizer updates of a ps variable run on that ps; every other op (control flow
  included: a loop passes handles, not values) runs on the worker, except an op placed on a
  ps explicitly (``tf.device``: the optimizer prepares its hyperparameters on each variable's
  device) and an op with no inputs (a constant), which TF places with its consumers when they
  all sit on one device;
* a tensor crosses once per (tensor, destination device) when its producer and a consumer sit
  on different devices, one of them a ps (graph partitioning adds one Send/Recv pair per such
  edge); its bytes are its static size (dimensions unknown at trace time are counted in
  `unsized`);
* an op counts only if it runs: TF prunes a function body to what its outputs, its control
  outputs and its stateful ops need (``PruneFunctionBody``, common_runtime/function_utils.cc),
  and so does the count (a pass that runs the model only for its embedding ids keeps the ids);
* a ``tf.while_loop`` body counts once per iteration: per step, the closure's counts are
  ``(outside + trips × body) / steps``; each ps task with ops in a loop body also gets the
  loop's predicate at every iteration (1 byte; TF runs a copy of the loop's control on every
  device the loop touches, ``AddControlFlow`` in graph_partition.cc).

>>> Traffic(to_ps=(2, 8.0), from_ps=(1, 4.0), ps_ops=3, fetches=1).as_dict()["tensors"]
3.0
"""

from __future__ import annotations

import collections
import dataclasses
import json

from tfps import _tf

tf = _tf.require()

__all__ = ["Crossing", "Traffic", "count", "count_file"]

_WORKER = "worker"
_LOOPS = ("While", "StatelessWhile")
_BRANCHES = ("If", "StatelessIf", "Case", "StatelessCase")
_CALLS = ("PartitionedCall", "StatefulPartitionedCall")
_NESTING = _LOOPS + _BRANCHES + _CALLS


class Crossing(collections.namedtuple(
        "Crossing", "direction tensor producer consumer bytes weight row_bytes in_loop")):
    """One tensor crossing between worker and ps: ``direction`` is ``to_ps`` or ``from_ps``;
    the op types that produce and consume it; its static bytes (None: dynamic); how many
    times per run of the closure it crosses; for a tensor whose only unknown dimension is
    the first (rows of ids known at run time), the bytes per row; whether it crosses inside
    the closure's loop (per step) or outside it (per closure)."""


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Per training step: ``(tensors, bytes)`` to and from the ps tasks, ops on ps, fetches.

    Attributes:
      to_ps: tensors and bytes sent from the worker to the ps tasks.
      from_ps: tensors and bytes sent from the ps tasks to the worker.
      ps_ops: ops run on ps tasks (constants, Identity and NoOp left out: they do no work).
      ops: ops run anywhere, by the same rule (a loop's or a call's ops, not the loop op).
      fetches: per-worker dataset elements fetched.
      unsized: tensors crossing whose size is not known at trace time (not in the bytes).
      loop: the counts of one iteration of the closure's loop alone (what repeats per step or
        micro-batch, without the once-per-closure part), or None without a loop.
      crossings: every crossing tensor (`Crossing`), for a closer look.
    """

    to_ps: tuple[float, float]
    from_ps: tuple[float, float]
    ps_ops: float
    fetches: float
    unsized: float = 0.0
    loop: Traffic | None = None
    crossings: tuple = dataclasses.field(default=(), repr=False, compare=False)
    closure_steps: int = 1
    ops: float = 0.0
    op_types: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def tensors(self) -> float:
        return self.to_ps[0] + self.from_ps[0]

    @property
    def bytes(self) -> float:
        return self.to_ps[1] + self.from_ps[1]

    def bytes_with_rows(self, per_step_rows: float, per_closure_rows: float) -> float:
        """Bytes per step, with the tensors of run-time size resolved: a tensor whose rows
        are known only at run time (ids de-duplicated in a step, or over a closure) counts
        `per_step_rows` rows inside the closure's loop and `per_closure_rows` outside it."""
        dynamic = 0.0
        for c in self.crossings:
            if c.bytes is None and c.row_bytes is not None:
                rows = per_step_rows if c.in_loop else per_closure_rows
                dynamic += c.weight * rows * c.row_bytes
        return self.bytes + dynamic / self.closure_steps

    def as_dict(self) -> dict:
        return {"tensors": self.tensors, "bytes": self.bytes,
                "tensors_to_ps": self.to_ps[0], "bytes_to_ps": self.to_ps[1],
                "tensors_from_ps": self.from_ps[0], "bytes_from_ps": self.from_ps[1],
                "ps_ops": self.ps_ops, "ops": self.ops, "fetches": self.fetches,
                "unsized": self.unsized}

    def __str__(self) -> str:
        return (f"per step: {self.to_ps[0]:g} tensors ({self.to_ps[1]:,.0f} B) worker->ps, "
                f"{self.from_ps[0]:g} ({self.from_ps[1]:,.0f} B) ps->worker, "
                f"{self.ps_ops:g} ops on ps, {self.fetches:g} dataset fetches")


_NO_WORK = frozenset({"Const", "Identity", "NoOp"})


def _is_ps(device: str) -> bool:
    return "/job:ps" in device


def _size(tensor) -> int | None:
    n = tensor.shape.num_elements() if tensor.shape.is_fully_defined() else None
    return None if n is None or tensor.dtype == tf.variant else n * tensor.dtype.size


def _row_bytes(tensor) -> int | None:
    """Bytes per row of a tensor whose first dimension alone is unknown."""
    shape = tensor.shape
    if shape.rank is None or shape.rank == 0 or not shape[1:].is_fully_defined() or \
            tensor.dtype == tf.variant:
        return None
    return shape[1:].num_elements() * tensor.dtype.size


def _live(graph) -> set | None:
    """Names of the ops of `graph` that run (see the module docstring), or None when the
    graph does not say what it returns (a GraphDef loaded from a file: everything runs)."""
    outputs = list(getattr(graph, "outputs", None) or [])
    controls = list(getattr(graph, "control_outputs", None) or [])
    if not outputs and not controls:
        return None
    stack = [t.op for t in outputs] + controls + [
        op for op in graph.get_operations() if op.op_def is not None and op.op_def.is_stateful]
    live: set = set()
    while stack:
        op = stack.pop()
        if op.name in live:
            continue
        live.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return live


class _Counter:
    """Walks a graph and its loop bodies; `totals` are per run of the outer graph.

    `bodies` maps function names to their graphs (a saved graph's library); None looks them
    up in the live traced graphs.
    """

    def __init__(self, trips: int, bodies: dict | None = None, in_loop: bool = False):
        self.trips = trips
        self.bodies = bodies
        self.in_loop = in_loop
        self.totals = collections.Counter()
        self.ps_devices: set[str] = set()  # ps tasks with ops in this graph (not nested)
        self.loop_totals: collections.Counter | None = None  # one iteration of the top loop
        self.crossings: list[Crossing] = []

    def walk(self, graph, input_devices: dict, weight: float) -> None:
        devices = dict(input_devices)  # tensor name -> device of its producer
        for external, internal in getattr(graph, "captures", ()):
            device = getattr(external, "device", "") or ""
            devices.setdefault(internal.name, device if _is_ps(device) else _WORKER)
        functions = self.bodies if self.bodies is not None else _tf.function_graphs(graph)
        live = _live(graph)
        ops = [op for op in graph.get_operations() if live is None or op.name in live]
        placed: dict[str, str] = {}
        for op in ops:  # ops with a ps resource input run on that ps
            resources = [devices.get(t.name, _WORKER) for t in op.inputs
                         if t.dtype == tf.resource]
            # Control flow runs where the closure runs; it passes handles, not data.
            ps = [d for d in resources if _is_ps(d)] if op.type not in _NESTING else []
            requested = op.device or ""  # e.g. an optimizer's per-variable constants
            placed[op.name] = ps[0] if ps else requested if _is_ps(requested) else _WORKER
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
            # Constants, Identity and NoOp do no work, nor does an op that only passes a
            # handle along (a body's placeholder for a captured variable).
            works = op.type not in _NO_WORK and op.type != "Placeholder" and not (
                op.outputs and all(o.dtype == tf.resource for o in op.outputs))
            if works and op.type not in _NESTING:
                self.totals["ops"] += weight
                self.totals["op:" + op.type] += weight
            if _is_ps(here) and works:
                self.totals["ps_ops"] += weight
                self.ps_devices.add(here)
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
                    self.crossings.append(Crossing(
                        way, t.name, t.op.type, op.type, size, weight,
                        _row_bytes(t) if size is None else None, self.in_loop))
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
        best, best_crossings, best_devices = None, [], set()
        for name in names:
            body = functions.get(name)
            if body is None:
                continue
            counter = _Counter(self.trips, self.bodies, self.in_loop or op.type in _LOOPS)
            mapping = {b.name: (devices.get(t.name, _WORKER) if t.dtype == tf.resource
                                else _WORKER) for b, t in zip(body.inputs, inputs)}
            counter.walk(body, mapping, 1.0)
            if best is None or counter.totals["ps_ops"] > best["ps_ops"]:
                best, best_crossings = counter.totals, counter.crossings
                best_devices = counter.ps_devices
        if op.type in _LOOPS and best is not None:
            # Each ps task with work in the loop runs a copy of its control loop, and gets the
            # loop's predicate from the worker at every iteration (graph_partition.cc,
            # AddControlFlow): one more 1-byte tensor per ps task per trip.
            for _ in best_devices:
                best["to_ps_tensors"] += 1
                best["to_ps_bytes"] += 1
                best_crossings = [*best_crossings, Crossing(
                    "to_ps", f"{op.name}:loop predicate", "LoopCond", "Switch", 1, 1.0, None,
                    True)]
        if op.type in _LOOPS and best is not None and self.loop_totals is None:
            self.loop_totals = collections.Counter(best)
        for key, value in (best or {}).items():
            self.totals[key] += value * inner * weight
        self.crossings += [c._replace(weight=c.weight * inner * weight)
                           for c in best_crossings]


def _traffic(totals, steps: int, loop=None, crossings=()) -> Traffic:
    per = 1.0 / steps
    return Traffic(to_ps=(totals["to_ps_tensors"] * per, totals["to_ps_bytes"] * per),
                   from_ps=(totals["from_ps_tensors"] * per, totals["from_ps_bytes"] * per),
                   ps_ops=totals["ps_ops"] * per, fetches=totals["fetches"] * per,
                   unsized=totals["unsized"] * per, loop=loop, crossings=tuple(crossings),
                   closure_steps=steps, ops=totals["ops"] * per,
                   op_types={k[3:]: v * per for k, v in totals.items() if k.startswith("op:")})


def count(graph, steps: int, trips: int, *, devices: dict | None = None,
          bodies: dict | None = None) -> Traffic:
    """The per-step `Traffic` of a traced closure `graph` that runs `steps` training steps,
    its loop bodies `trips` times (``steps`` for a per-step loop, ``K - 1`` for accumulation).

    `devices` (placeholder tensor name -> device) and `bodies` describe a graph loaded by
    `load`; a live traced graph carries both itself.
    """
    counter = _Counter(trips, bodies)
    counter.walk(graph, devices or {}, 1.0)
    loop = None if counter.loop_totals is None else _traffic(counter.loop_totals, 1)
    return _traffic(counter.totals, max(steps, 1), loop, counter.crossings)


def count_file(path: str, steps: int, trips: int) -> Traffic:
    """`count` for a traced closure graph saved to a file: `path` holds its GraphDef with
    shapes (``graph.as_graph_def(add_shapes=True)``) and ``path + ".json"`` maps each
    captured placeholder's op name to the device of the handle it captures (what the
    benchmarks' plain-TF programs write, `benchmarks/workloads.py` `save_graph`). Run it in
    a process that traced nothing else: loading registers the graph's functions."""
    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    with open(path + ".json") as f:
        devices = {f"{name}:0": device for name, device in json.load(f).items()}
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        bodies = {fn.signature.name: _tf.function_def_to_graph(fn)
                  for fn in graph_def.library.function}
    return count(graph, steps, trips, devices=devices, bodies=bodies)


def main(argv=None) -> int:
    """``python -m tfps.train.traffic GRAPH --steps N --trips N``: prints the counts as JSON."""

    from tfps import _cli

    parser = _cli.Parser(prog="python -m tfps.train.traffic", description=main.__doc__)
    parser.add_argument("graph")
    parser.add_argument("--steps", type=_cli.int_in(1, 1 << 30), required=True)
    parser.add_argument("--trips", type=_cli.int_in(0, 1 << 30), required=True)
    parser.add_argument("--rows", type=float, nargs=2, metavar=("PER_STEP", "PER_CLOSURE"),
                        default=(0.0, 0.0), help="run-time rows of the dynamic tensors")
    try:
        args = parser.parse_args(argv)
        result = count_file(args.graph, args.steps, args.trips)
    except (_cli.UsageError, OSError) as e:
        return _cli.exit_on_error(parser.prog, e)
    print(json.dumps({**result.as_dict(), "bytes_resolved": result.bytes_with_rows(*args.rows),
                      "loop": result.loop and result.loop.as_dict()}))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
