"""Where the time of `ps_vs_local` goes: the recsys step timed in three placements.

    python benchmarks/where_time_goes.py [--steps 300] [--k 100]

Starts a 1 ps + 1 worker cluster (as benchmarks/run.py does) and runs itself as its chief.
The same ``@tf.function`` training loop (K steps per call, batches generated in the function,
so every placement does the same input work) is timed:

  A. local:       in the chief process, variables local (no cluster involved);
  B. worker-only: executed on the worker task, variables on the worker (remote execution,
                  another process, no ps traffic);
  C. PSS:         scheduled on the worker by a ClusterCoordinator, variables on the ps.

B - A is the price of running in another process on a busy 2-core machine; C - B is the
parameter traffic (every step reads each dense variable from ps and sends every gradient
back). It also counts the tensors that cross between worker and ps per step (graph edges
of one traced step whose ends lie on different jobs) and the CPU seconds each process burned
during C. Plain TF in the chief: no tfps.

Then, on the same cluster, a second chief runs ``tfps.Trainer`` (D) in its default per-step
mode, with stale reads (``read_every`` = S_STALE) and in the best mode of the speed rows
(``local_steps`` = H_BEST of benchmarks/rows.py),
and prints for each the steps/s and the CPU milliseconds each process (ps, worker, chief)
burns per step in the timed window: what is left after the traffic levers, task by task.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chief(args):
    sys.path.insert(0, HERE)
    import workloads  # first: sets TF_USE_LEGACY_KERAS before TensorFlow loads

    # isort: split
    import tensorflow as tf

    pids = json.loads(os.environ["BENCH_PIDS"])
    k = args.k

    def make_train(model, optimizer, run=lambda fn, batch: fn(batch)):
        variables = model.trainable_variables

        def replica(batch):
            with tf.GradientTape() as tape:
                loss = workloads.recsys_loss(model, batch)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        @tf.function
        def train(seed):
            loss = tf.constant(0.0)
            for i in tf.range(k):
                loss = run(replica, workloads.recsys_batch(seed, i, workloads.RECSYS_IDS))
            return loss
        return train, replica

    def timed(call, calls):
        call()  # trace + warm
        call()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        return calls * k / (time.perf_counter() - start)

    calls = max(1, args.steps // k)
    results = {}
    # A. local
    model, opt = workloads.build_recsys(), workloads.recsys_optimizer()
    train, _ = make_train(model, opt)
    results["A_local"] = timed(lambda: float(train(tf.constant(0))), calls)

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=tf.distribute.experimental.partitioners
        .MinSizePartitioner(min_shard_bytes=256 << 10, max_shards=1))
    # B. on the worker, variables there too
    with tf.device("/job:worker/replica:0/task:0/device:CPU:0"):
        model_w, opt_w = workloads.build_recsys(), workloads.recsys_optimizer()
        train_w, _ = make_train(model_w, opt_w)
        results["B_worker_only"] = timed(lambda: float(train_w(tf.constant(0))), calls)
    # C. PSS
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        model_p, opt_p = workloads.build_recsys(), workloads.recsys_optimizer()
    train_p, replica_p = make_train(model_p, opt_p,
                                    run=lambda fn, batch: strategy.run(fn, args=(batch,)))

    def pss_call():
        coordinator.schedule(train_p, args=(tf.constant(0),))
        coordinator.join()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    before["chief"] = cpu_seconds(os.getpid())
    start = time.perf_counter()
    results["C_pss"] = timed(pss_call, calls)
    wall = time.perf_counter() - start
    cpu = {name: round(cpu_seconds(pid if name != "chief" else os.getpid()) - before[name], 2)
           for name, pid in {**pids, "chief": os.getpid()}.items()}
    # Tensors crossing jobs in one traced step (each is a send/recv over gRPC).
    spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec(t.shape, t.dtype), workloads.recsys_batch(0, 0, 10))
    graph = tf.function(replica_p).get_concrete_function(spec).graph

    def job(op):
        return "ps" if "/job:ps" in op.device else "worker"
    crossing = sum(1 for op in graph.get_operations() for t in op.inputs
                   if job(t.op) != job(op))
    ps_ops = sum(1 for op in graph.get_operations() if job(op) == "ps")
    print("where: " + json.dumps({
        "steps_per_sec": {key: round(v, 1) for key, v in results.items()},
        "ms_per_step": {key: round(1e3 / v, 2) for key, v in results.items()},
        "tensors_crossing_per_step": crossing, "ops_on_ps_per_step": ps_ops,
        "dense_variables": sum(1 for v in model_p.trainable_variables
                               if "embedding" not in v.name),
        "cpu_seconds_during_C": cpu, "wall_seconds_C": round(wall, 1)}), flush=True)


def tfps_chief(args):
    """D: tfps.Trainer per step, with stale reads and in the best mode: CPU ms per step of
    each process, and the traffic counts of each mode."""
    sys.path.insert(0, os.path.join(HERE, "tfps_side"))
    sys.path.insert(0, HERE)
    import side  # first: it imports tfps, which sets up TensorFlow's environment

    # isort: split
    import rows
    import workloads

    pids = dict(json.loads(os.environ["BENCH_PIDS"]), chief=os.getpid())
    modes = {"per_step": [], f"read_every={rows.S_STALE}": [f"--read_every={rows.S_STALE}"],
             f"local_steps={rows.H_BEST}": [f"--local_steps={rows.H_BEST}"]}
    for mode, flags in modes.items():
        flags = ["--workload=recsys", f"--steps_per_closure={args.k}", *flags]
        trainer = side.trainer(side.parser().parse_args(flags))
        target = trainer.train(2 * rows.H_BEST).step  # traces, warms
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        result = trainer.train(target + args.steps)
        steps = result.step - target
        wall = time.perf_counter() - start
        cpu = {name: round(1e3 * (cpu_seconds(pid) - before[name]) / steps, 2)
               for name, pid in pids.items()}
        traffic = trainer.traffic()
        work = workloads.WORKLOADS["recsys"]  # distinct ids per step and per closure
        k = result.steps_per_closure or args.k
        rows_seen = workloads.distinct_ids(work["dataset_fn"](workloads.RECSYS_IDS),
                                           batches=4 * k, group=k)
        print("where: " + json.dumps({
            "tfps_mode": mode, "steps_per_sec": round(steps / wall, 1),
            "cpu_ms_per_step": cpu, "wall_ms_per_step": round(1e3 * wall / steps, 2),
            "tensors_per_step": round(traffic.to_ps[0] + traffic.from_ps[0], 3),
            "bytes_per_step": round(traffic.bytes_with_rows(*rows_seen)),
            "ops_on_ps_per_step": round(traffic.ps_ops, 3)}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--chief", choices=("tf", "tfps"))
    args = parser.parse_args()
    if args.chief == "tf":
        return chief(args)
    if args.chief == "tfps":
        return tfps_chief(args)
    sys.path.insert(0, HERE)
    import tempfile

    import harness
    with tempfile.TemporaryDirectory() as tmp:
        procs = harness.Processes(tmp)
        cluster = harness.Cluster(procs, 1, 1, "where")
        try:
            pids = {"ps": cluster.procs.procs[0].pid, "worker": cluster.procs.procs[1].pid}
            env = dict(cluster.chief_env(), BENCH_PIDS=json.dumps(pids))
            for stage in ("tf", "tfps"):
                proc = procs.start([harness.PY, __file__, f"--chief={stage}",
                                    f"--steps={args.steps}", f"--k={args.k}"], env=env)
                try:
                    proc.wait(900)
                finally:
                    harness.kill_group(proc)
        finally:
            cluster.close()
            procs.close()


if __name__ == "__main__":
    main()
