"""A chief for the hang drills: one closure blocks forever on its worker, which still answers
GetStatus (only the chief can see it hang).

``python hung_closure_job.py N`` schedules N closures; each adds 1 to ``total`` on the ps,
except the third one to run, which first waits on a new, empty queue on its worker (a
dequeue that never returns). The chief's `tfps.train.health` finds that worker holding a closure
with no completion; its launcher kills and restarts it; TF runs the closure again elsewhere,
where it no longer blocks (the counter on the ps is past 3). Prints
``result: total=<float> calls=<int>``: total is N when every closure counted once.
"""

import sys

import tensorflow as tf

import tfps  # first: binds tf.keras and sets GRPC_FAIL_FAST
from tfps.train import health


class _NoLoop:
    """This job has no `TrainLoop`: nothing observes its steps."""

    def observe(self, observer):
        del observer


def main(count: int) -> None:
    strategy = tfps.make_strategy()
    coordinator = tfps.make_coordinator(strategy)
    with strategy.scope():
        total = tf.Variable(0.0)
        calls = tf.Variable(0, dtype=tf.int64)
    health.attach(loop=_NoLoop(), coordinator=coordinator, num_workers=2)

    def block():  # a dequeue from a new, empty queue on the worker: waits forever, no CPU
        queue = tf.raw_ops.FIFOQueueV2(component_types=[tf.float32])
        return tf.raw_ops.QueueDequeueV2(handle=queue, component_types=[tf.float32])[0]

    @tf.function
    def step():
        call = calls.assign_add(1)
        waited = tf.cond(tf.equal(call, 3), block, lambda: tf.constant(0.0))
        total.assign_add(1.0 + 0.0 * waited)

    for _ in range(count):
        coordinator.schedule(step)
    coordinator.join()
    print(f"result: total={total.numpy():.1f} calls={calls.numpy()}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
