"""The chief's view of closures per worker (`tfps._tf.track_closures` feeding
`tfps.train.health.ClosureTracker`) on an in-process cluster: a closure that takes far longer
than the others shows its worker as hung while it runs, and every closure is counted done
once it finished."""

from __future__ import annotations

import time

import tfps
from tfps import _tf
from tfps.train.health import ClosureTracker


def test_a_slow_closure_shows_its_worker_hung_until_it_finishes():
    import tensorflow as tf

    strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=1, num_workers=2))
    coordinator = tfps.make_coordinator(strategy)
    tracker = ClosureTracker(2, floor=0.3)
    _tf.track_closures(coordinator, tracker)
    _tf.track_closures(coordinator, tracker)  # idempotent: closures are not counted twice
    with strategy.scope():
        total = tf.Variable(0.0)

    def nap(seconds):
        time.sleep(float(seconds))
        return seconds

    @tf.function
    def step(seconds):
        slept = tf.py_function(nap, [seconds], tf.float32)
        total.assign_add(1.0 + 0.0 * slept)

    for _ in range(4):
        coordinator.schedule(step, args=(tf.constant(0.0),))
    coordinator.join()
    assert sum(tracker.done.values()) == 4 and tracker.hung() == []
    coordinator.schedule(step, args=(tf.constant(3.0),))
    seen = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline and not seen:
        seen = tracker.hung()
        time.sleep(0.05)
    assert [h.task for h in seen] in (["worker:0"], ["worker:1"]), seen
    coordinator.join()
    assert tracker.hung() == [] and sum(tracker.done.values()) == 5
    assert float(total.numpy()) == 5.0
    assert tracker.failed == {} and tracker.rerun == {}
