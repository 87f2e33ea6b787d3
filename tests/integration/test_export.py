"""`tfps.export` on a real in-process cluster: models trained with sharded variables on ps
tasks (a tf_keras and a Keras 3 model by `tfps.Trainer`, a raw `tf.Module` with a serving
function, a tf_keras model by `tfps.keras.fit`) are exported, then loaded in a fresh Python that
has plain TensorFlow only (no tfps import, no cluster, no TF_USE_LEGACY_KERAS), whose serving
outputs must equal the chief's own predictions on the same inputs. Also: `saved_model_cli`,
the exported variables are whole, bad input writes nothing, and a chief killed (SIGKILL)
while it writes an export never leaves a partial SavedModel at its path."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, communicate, kill_group, task_env

import tfps
from tfps.errors import ConfigError

NUM_IDS, DIM, BATCH = 20_000, 8, 64  # a 640 KB table: two shards on two ps tasks
MAX_DIFF = 1e-5


@pytest.fixture(scope="module")
def strategy():
    return tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1))


def _batch(i):
    import tensorflow as tf
    seed = tf.stack([tf.cast(i, tf.int32), 3])
    ids = tf.random.stateless_uniform([BATCH, 4], seed=seed, maxval=NUM_IDS, dtype=tf.int64)
    x = tf.random.stateless_normal([BATCH, 4], seed=seed + [0, 1])
    return ids, x, tf.reduce_sum(x, 1) + tf.cast(ids[:, 0] % 5, tf.float32)


def _dataset(ctx=None):
    import tensorflow as tf
    return tf.data.Dataset.range(1 << 30).map(_batch)


def _keras_model(k, names=True):
    ids = k.Input([4], dtype="int64", name="ids" if names else None)
    x = k.Input([4], name="feats" if names else None)
    h = k.layers.Flatten()(k.layers.Embedding(NUM_IDS, DIM)(ids))
    h = k.layers.Dense(16, activation="relu")(k.layers.Concatenate()([h, x]))
    return k.Model([ids, x], k.layers.Dense(1)(h))


class _Module:
    """A raw tf.Module (the table sharded under the strategy) with a `serve` method."""

    @staticmethod
    def build():
        import tensorflow as tf

        class Scorer(tf.Module):
            def __init__(self):
                super().__init__()
                self.table = tf.Variable(tf.random.stateless_normal([NUM_IDS, DIM], [1, 2]) * .1,
                                         name="table")
                self.w = tf.Variable(tf.random.stateless_normal([4 * DIM + 4, 1], [3, 4]) * .1,
                                     name="w")

            def __call__(self, ids, feats):
                e = tf.reshape(tf.nn.embedding_lookup(self.table, ids), [-1, 4 * DIM])
                return tf.concat([e, feats], 1) @ self.w

            @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int64, name="ids"),
                                          tf.TensorSpec([None, 4], tf.float32, name="feats")])
            def serve(self, ids, feats):
                return {"score": self(ids, feats)}

        return Scorer()


def _loss(call):
    import tensorflow as tf
    return lambda m, b: tf.reduce_mean(tf.square(tf.squeeze(call(m, b[0], b[1]), 1) - b[2]))


def _trainer(strategy, build, call, model_dir=None):
    return tfps.Trainer(strategy=strategy, model=build, loss_fn=_loss(call), optimizer="adagrad",
                        learning_rate=0.1, dataset_fn=_dataset, model_dir=model_dir,
                        options=tfps.TrainerOptions(steps_per_closure=10, log_every=0,
                                                    progress_bar="off"))


# Runs in a fresh interpreter: plain TensorFlow, nothing of tfps or of the test's environment.
_FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf

report = {}
for name, path, inputs in json.loads(sys.argv[1]):
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    with np.load(inputs) as data:
        feed = {k: tf.constant(data[k]) for k in data.files if k != "_chief"}
        chief = data["_chief"]
    out = {k: v.numpy() for k, v in serve(**feed).items()}
    # The prediction: "score" where the signature has more outputs (a SignatureDef's outputs
    # are a protobuf map: their order is not defined).
    y = out["score"] if "score" in out else list(out.values())[0]
    report[name] = {
        "keys": sorted(serve.structured_input_signature[1]), "outputs": sorted(out),
        "shape": list(y.shape), "finite": bool(np.isfinite(y).all()),
        "max_diff": float(np.abs(y.reshape(chief.shape) - chief).max()),
        "variables": [[v.name, v.shape.as_list()] for v in loaded.model_variables]}
report["modules"] = sorted(m for m in ("tfps", "tf_keras") if m in sys.modules)
print("REPORT " + json.dumps(report))
"""


def _fresh_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH", "GRPC_FAIL_FAST", "TF_CONFIG")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _load_fresh(exports: list, tmp_path) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", _FRESH, json.dumps(exports)],
                            cwd=str(tmp_path), env=_fresh_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out = communicate(proc, 120, "the fresh loader")
    finally:
        kill_group(proc)
    lines = [l for l in out.splitlines() if l.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, out[-4000:]
    return json.loads(lines[-1][len("REPORT "):])


def test_exports_serve_the_chiefs_predictions_in_plain_tensorflow(strategy, tmp_path):
    import keras
    import tensorflow as tf
    import tf_keras

    from tfps.export.signature import keras_input_signature

    ids, feats, _ = _batch(10**6)
    keras_call = lambda m, i, x: m([i, x])  # noqa: E731
    models = {}
    models["tfk"] = _trainer(strategy, lambda: _keras_model(tf.keras, names=False), keras_call)
    models["k3"] = _trainer(strategy, lambda: _keras_model(keras), keras_call,
                            model_dir=str(tmp_path / "k3_run"))
    models["module"] = _trainer(strategy, _Module.build, lambda m, i, x: m(i, x))
    exports, start = [], time.monotonic()
    for name, trainer in models.items():
        trainer.train(30)
        serving = {"module": "serve"}.get(name)
        chief = (trainer.model(ids, feats) if name == "module" else trainer.model([ids, feats]))
        path = trainer.export(str(tmp_path / name / "1"), serving_fn=serving)
        keys = (["ids", "feats"] if name == "module" else
                [s.name for s in keras_input_signature(trainer.model)])
        exports.append((name, path, keys, chief.numpy()))
    # A raw tf.Module given a serving *function* on a dict signature (a key that is no Python
    # name becomes a signature key that is one; the function still gets its own keys).
    trainer = models["module"]
    path = trainer.export(
        str(tmp_path / "module_fn"), overwrite=True,
        serving_fn=lambda m, inputs: {"score": m(inputs["user ids"], inputs["feats"]),
                                      "norm": tf.norm(m.w)},
        input_signature={"user ids": tf.TensorSpec([None, 4], tf.int64),
                         "feats": tf.TensorSpec([None, 4], tf.float32)})
    exports.append(("module_fn", path, ["user_ids", "feats"],
                    trainer.model(ids, feats).numpy()))
    # A tf_keras model trained by fit, exported by tfps.keras.export.
    with strategy.scope():
        fitted = _keras_model(tf_keras)
        fitted.compile(tf_keras.optimizers.legacy.Adam(0.01), "mse", steps_per_execution=5)
    tfps.keras.fit(fitted, lambda ctx: _dataset().map(lambda i, x, y: ((i, x), y)), epochs=1,
                   steps_per_epoch=20, progress=False)
    path = tfps.keras.export(fitted, str(tmp_path / "fit" / "1"))
    exports.append(("fit", path, ["ids", "feats"], fitted([ids, feats]).numpy()))
    print(f"5 exports in {time.monotonic() - start:.1f}s")
    # The Keras 3 model again, by `python -m tfps.export` from its checkpoint (no cluster).
    k3_chief = [chief for name, _, _, chief in exports if name == "k3"][0]
    path = _export_command(tmp_path, "k3", tmp_path / "k3_run")
    exports.append(("k3_cli", path, ["ids", "feats"], k3_chief))

    requests = []
    for name, path, keys, chief in exports:
        inputs = str(tmp_path / f"{name}.npz")
        np.savez(inputs, _chief=chief, **dict(zip(keys, (ids.numpy(), feats.numpy()))))
        requests.append((name, path, inputs))
    report = _load_fresh(requests, tmp_path)
    assert report.pop("modules") == [], "the loader imported tfps or tf_keras"
    for name, _, keys, _ in exports:
        r = report[name]
        print(f"{name}: max |export - chief| = {r['max_diff']:.3g}, outputs {r['outputs']}")
        assert r["max_diff"] <= MAX_DIFF and r["finite"] and r["shape"][0] == BATCH, (name, r)
        assert r["keys"] == sorted(keys), (name, r)
        # Un-sharded: the table is one variable of its full shape, no "part_" left.
        shapes = [shape for _, shape in r["variables"]]
        assert [NUM_IDS, DIM] in shapes and not any("part_" in v for v, _ in r["variables"]), r
    assert report["module_fn"]["outputs"] == ["norm", "score"]
    assert report["k3"]["keys"] == ["feats", "ids"]
    # The trained model's own input names, not the copy's (a copy's auto names differ).
    assert report["tfk"]["keys"] == sorted(s.name for s in keras_input_signature(
        models["tfk"].model))

    show = subprocess.run([os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
                           "show", "--all", "--dir", exports[0][1]], capture_output=True,
                          text=True, env=_fresh_env(), timeout=120)
    assert show.returncode == 0, show.stderr[-2000:]
    assert "signature_def['serving_default']" in show.stdout
    for key in exports[0][2]:
        assert f"inputs['{key}'] tensor_info" in show.stdout, show.stdout[:3000]


_BUILDERS = f'''
import keras

def k3(units=16):
    ids, x = keras.Input([4], dtype="int64", name="ids"), keras.Input([4], name="feats")
    h = keras.layers.Flatten()(keras.layers.Embedding({NUM_IDS}, {DIM})(ids))
    h = keras.layers.Dense(units, activation="relu")(keras.layers.Concatenate()([h, x]))
    return keras.Model([ids, x], keras.layers.Dense(1)(h))

def other():
    return k3(units=17)
'''


def _export_command(tmp_path, builder: str, model_dir, expect: int = 0) -> str:
    """Runs ``python -m tfps.export`` with a builder of `_BUILDERS`; returns --out."""
    (tmp_path / "builders.py").write_text(_BUILDERS)
    out = str(tmp_path / f"{builder}_cli" / "1")
    proc = subprocess.Popen([sys.executable, "-m", "tfps.export", "--model_dir", str(model_dir),
                             "--model", f"{tmp_path}/builders.py:{builder}", "--out", out],
                            cwd=REPO, env=task_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    assert proc.returncode == expect, stdout + stderr[-3000:]
    if expect == 0:
        assert stdout.strip() == f"tfps.export: wrote {out} from {model_dir}/checkpoints/ckpt-30"
    else:
        errors = [l for l in stderr.splitlines() if l.startswith("tfps.export: ")]
        assert len(errors) == 1 and "does not fit the model" in errors[0], stderr[-3000:]
        assert "Traceback" not in stderr and not os.path.exists(os.path.dirname(out))
    return out


def test_bad_export_input_writes_nothing(strategy, tmp_path):
    import tensorflow as tf

    trainer = _trainer(strategy, _Module.build, lambda m, i, x: m(i, x))
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_text("")
    before = sorted(os.listdir(tmp_path))
    spec = tf.TensorSpec([None, 4], tf.int64, name="ids")

    def refused(match, fn):
        with pytest.raises(ConfigError, match=match):
            fn()
        assert sorted(os.listdir(tmp_path)) == before

    out = str(tmp_path / "out")
    refused("it is a file that is not a SavedModel",
            lambda: trainer.export(str(tmp_path / "file"), serving_fn="serve", overwrite=True))
    refused("it is a directory that is not a SavedModel",
            lambda: trainer.export(str(tmp_path / "dir"), serving_fn="serve", overwrite=True))
    refused("pass overwrite=True",
            lambda: trainer.export(str(tmp_path / "sm"), serving_fn="serve"))
    refused("`serving_fn` is required",
            lambda: trainer.export(out))
    refused("must have a tf.function `predict`",
            lambda: trainer.export(out, serving_fn="predict"))
    refused("`input_signature` is required",
            lambda: trainer.export(out, serving_fn=lambda m, i: m.w))
    refused("`builder` is required",
            lambda: tfps.export_saved_model(trainer.model, out, serving_fn="serve"))

    def other_model():
        m = _Module.build()
        m.table = tf.Variable(tf.zeros([NUM_IDS + 1, DIM]), name="table")
        return m

    refused(r"variable 0 is table \[20000, 8\] float32 in the model and table \[20001, 8\]",
            lambda: trainer.export(out, serving_fn="serve", builder=other_model))
    sharded = trainer.model
    refused("must read the variables of the model it is given",
            lambda: trainer.export(out, input_signature=spec, serving_fn=lambda m, i: (
                tf.nn.embedding_lookup(sharded.table, i))))
    with strategy.scope():
        refused(r"outside `strategy.scope\(\)`",
                lambda: trainer.export(out, serving_fn="serve"))

    # The command, with a checkpoint of another model: exit 2, one line, nothing written.
    keras_trainer = _trainer(strategy, lambda: _keras_model(__import__("keras")),
                             lambda m, i, x: m([i, x]), model_dir=str(tmp_path / "run"))
    keras_trainer.train(30)
    _export_command(tmp_path / "run", "other", tmp_path / "run", expect=2)


# A chief that exports a 128 MB table (no cluster: the write does not depend on where the
# values came from) to argv[1], replacing what is there, with every value = argv[2].
_EXPORTER = r"""
import sys
import tfps, tensorflow as tf

def build(value=0.0):
    m = tf.Module()
    m.table = tf.Variable(tf.fill([2_000_000, 16], value), name="table")
    return m

model = build(float(sys.argv[2]))
tfps.export_saved_model(model, sys.argv[1], builder=build, overwrite=True,
                        serving_fn=lambda m, ids: tf.gather(m.table, ids),
                        input_signature=tf.TensorSpec([None], tf.int64, name="ids"))
print("exported", flush=True)
"""


def _export(path, value):
    return subprocess.Popen([sys.executable, "-c", _EXPORTER, path, str(value)], cwd=REPO,
                            env=task_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _temps(path) -> list[str]:
    return glob.glob(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp.*"))


def _kill_mid_write(path, value) -> None:
    """Starts an export and SIGKILLs it while its temporary directory is being written."""
    proc = _export(path, value)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(glob.glob(os.path.join(t, "variables", "*")) for t in _temps(path)):
                os.killpg(proc.pid, signal.SIGSTOP)  # frozen mid-write: nothing moves now
                break
            time.sleep(0.001)
        assert proc.poll() is None, f"the export ended before it was caught mid-write:\n" \
                                    f"{proc.communicate()[0][-3000:]}"
        caught = _temps(path)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    assert caught and os.path.isdir(caught[0]), caught


def _served(path) -> float:
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures["serving_default"]
    return float(list(serve(ids=tf.constant([0, 1_999_999], tf.int64)).values())[0][1, 0])


def test_a_kill_during_export_never_leaves_a_partial_saved_model(tmp_path):
    path = str(tmp_path / "models" / "1")
    _kill_mid_write(path, 1.0)  # the first export of `path`, killed
    assert not os.path.exists(path) and len(_temps(path)) == 1

    done = _export(path, 2.0)
    assert "exported" in communicate(done, 180, "the export") and done.returncode == 0
    assert _served(path) == 2.0
    assert _temps(path) == []  # the dead process's temporary directory was removed

    _kill_mid_write(path, 3.0)  # an overwrite, killed: the previous export stays whole
    assert _served(path) == 2.0 and len(_temps(path)) == 1

    done = _export(path, 4.0)
    assert "exported" in communicate(done, 180, "the export") and done.returncode == 0
    assert _served(path) == 4.0 and _temps(path) == []
    assert sorted(os.listdir(os.path.dirname(path))) == ["1"]
