"""TensorFlow internals have one door, `tfps/_tf.py` (with its rooms, ``tfps/_tf_*.py``, which
it re-exports): no other module of tfps imports ``tensorflow.python`` or touches the private
attributes the door wraps."""

from __future__ import annotations

import glob
import os
import re

from conftest import REPO

DOOR = os.path.join(REPO, "tfps", "_tf.py")
# The door's rooms: parts of it in modules of their own (each module stays under 400 lines).
ROOMS = tuple(os.path.join(REPO, "tfps", name) for name in
              ("_tf_checkpoint.py", "_tf_coordinator.py", "_tf_keras.py", "_tf_server.py"))
# The private TF / Keras names the door wraps.
PRIVATE = ("_hyper", "_get_hyper", "_cache", "_current_new_cache_scope_count",
           "_num_workers", "_num_gpus_per_worker", "_get_next_no_partial_batch_handling",
           "_pss_evaluation_shards", "_functions", "_learning_rate", "_cluster_coordinator",
           "_cluster_resolver", "_tfll_initialized", "_tf_uses_legacy_keras",
           "_is_parameter_server_strategy_v2", "_sharded_container", "_create_all_weights",
           "_num_ps", "_serialize_to_tensors", "_restore_from_tensors",
           "_infer_output_signature")


def _sources():
    for path in glob.glob(os.path.join(REPO, "tfps", "**", "*.py"), recursive=True):
        with open(path) as f:
            yield path, f.read()


def test_only_the_door_imports_tensorflow_python():
    users = [os.path.relpath(p, REPO) for p, text in _sources() if "tensorflow.python" in text]
    assert users == ["tfps/_tf.py"], users


def test_only_the_door_touches_tf_private_attributes():
    pattern = re.compile(r"\.(" + "|".join(PRIVATE) + r")\b|[\"'](" + "|".join(PRIVATE) +
                         r")[\"']")
    offenders = [(os.path.relpath(p, REPO), m.group(0)) for p, text in _sources()
                 if os.path.abspath(p) not in (DOOR, *ROOMS) for m in pattern.finditer(text)]
    assert not offenders, offenders
    door = ""
    for path in (DOOR, *ROOMS):
        with open(path) as f:
            door += f.read()
    assert all(name in door for name in PRIVATE if name not in (
        "_cluster_coordinator", "_cluster_resolver", "_is_parameter_server_strategy_v2"))
