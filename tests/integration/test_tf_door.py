"""`tfps._tf.require`: every TF internal tfps relies on is present in the installed TF, and a
missing one fails in one line naming the TF version and what is missing."""

from __future__ import annotations

import pytest

from tfps import _tf
from tfps.errors import TensorFlowCompatibilityError


def test_every_internal_is_present_in_this_tensorflow():
    missing = [what for what, _, present in _tf._requirements() if not present()]
    assert missing == []
    assert _tf.require().__name__ == "tensorflow"


def test_a_missing_internal_fails_in_one_line(monkeypatch):
    real = _tf._requirements
    monkeypatch.setattr(_tf, "_checked", False)
    monkeypatch.setattr(_tf, "_requirements", lambda: real() + (
        ("Future._renamed", "tensorflow/python/distribute/future.py", lambda: False),))
    with pytest.raises(TensorFlowCompatibilityError) as info:
        _tf.require()
    message = str(info.value)
    assert "\n" not in message
    assert "tfps cannot run on tensorflow 2." in message
    assert "it needs Future._renamed from tensorflow/python/distribute/future.py" in message
    assert isinstance(info.value, ImportError)


@pytest.mark.parametrize("spinning, threads", [(True, 0), (False, 3)])
def test_task_servers_serverdef_is_the_one_tf_builds(spinning, threads):
    """`tfps._tf_server` writes the ServerDef by hand (a task server imports no TF): its bytes
    parse, with TF's own message, into what `tf.distribute.Server` builds."""
    import tensorflow as tf
    from tensorflow.core.protobuf import tensorflow_server_pb2

    from tfps import _tf_server

    cluster = {"chief": ["localhost:2000"], "ps": ["h1:2001", "[::1]:2002"],
               "worker": ["h3:2003"]}
    ours = tensorflow_server_pb2.ServerDef.FromString(_tf_server.server_def(
        cluster, "ps", 1, intra_op_threads=threads, inter_op_threads=threads,
        thread_spinning=spinning))
    theirs = tensorflow_server_pb2.ServerDef(
        cluster=tf.train.ClusterSpec(cluster).as_cluster_def(), job_name="ps", task_index=1,
        protocol="grpc")
    if threads or not spinning:
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                          inter_op_parallelism_threads=threads)
        config.experimental.disable_thread_spinning = not spinning
        theirs.default_session_config.CopyFrom(config)
    assert ours == theirs


def test_task_server_starts_without_importing_tensorflow():
    """`python -m tfps.server` serves a real task (a chief places a variable on it and runs a
    closure) and never imports TensorFlow's Python API."""
    import subprocess
    import sys

    from conftest import kill_group, task_env

    from tfps.cluster import free_ports

    ps, worker, chief = (f"localhost:{p}" for p in free_ports(3))
    cluster = {"chief": [chief], "ps": [ps], "worker": [worker]}
    # Says whether TF's Python API was imported, right after the server's "serving" line.
    probe = ("import builtins, runpy, sys\n"
             "say = builtins.print\n"
             "def hook(*a, **k):\n"
             "    say(*a, **k)\n"
             "    say('tensorflow imported:', 'tensorflow' in sys.modules, flush=True)\n"
             "builtins.print = hook\n"
             "sys.argv = ['tfps.server']\n"
             "runpy.run_module('tfps.server', run_name='__main__')\n")
    procs = [subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True,
                              env=task_env({"cluster": cluster, "task": {"type": t, "index": 0}}))
             for t in ("ps", "worker")]
    try:
        for proc in procs:  # TF's C++ start-up lines come first (before its log level applies)
            lines = [proc.stdout.readline()]
            while "serving on" not in lines[-1] and lines[-1] and len(lines) < 20:
                lines.append(proc.stdout.readline())
            assert proc.stdout.readline().strip() == "tensorflow imported: False", lines
        # The chief in a process of its own: this one keeps its in-process cluster.
        chief_code = ("import tfps, tensorflow as tf\n"
                      "strategy = tfps.make_strategy()\n"
                      "with strategy.scope():\n"
                      "    v = tf.Variable(2.0)\n"
                      "c = tfps.make_coordinator(strategy)\n"
                      "print('result', float(c.schedule(tf.function(lambda: v * 21.0)).fetch()),"
                      " v.device)\n")
        out = subprocess.run([sys.executable, "-c", chief_code], capture_output=True, text=True,
                             timeout=300, env=task_env({"cluster": cluster,
                                                        "task": {"type": "chief", "index": 0}}))
        assert "result 42.0 /job:ps/" in out.stdout, out.stdout + out.stderr[-2000:]
    finally:
        for proc in procs:
            kill_group(proc)
