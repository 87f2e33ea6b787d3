"""The planted click data (`planted_clicks`) as TFRecord files, as a user's data would be.

``write(data_dir, records, ...)`` writes ``train-NNNNN-of-NNNNN.tfrecord`` shards and an
``eval-00000-of-00001.tfrecord`` held-out set of `tf.train.Example` records, then
``MANIFEST.json`` (last: a directory without it is incomplete and is written again). Each
record carries its id (its index in the training files, in file order), its 4 categorical ids,
8 dense features, the click label and the true logit (for the oracle AUC). Plain TensorFlow
and NumPy: the benchmarks share it.

``parse(records)`` turns a vector of serialized records into ``(ids, dense, label, logit,
id)``; ``parse_heavy`` is the preprocessing-heavy variant of the ``service_offload`` benchmark
(the ids arrive as strings that are hashed, and crossed features are built).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import tensorflow as tf

from common import planted_clicks as clicks

MANIFEST = "MANIFEST.json"
_GENERATE_BATCH = 4096
FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.int64),
    "ids": tf.io.FixedLenFeature([clicks.NUM_SLOTS], tf.int64),
    "dense": tf.io.FixedLenFeature([clicks.NUM_DENSE], tf.float32),
    "label": tf.io.FixedLenFeature([], tf.float32),
    "logit": tf.io.FixedLenFeature([], tf.float32),
}
# The heavy parse's string ids and crosses: 8 string features hashed into the table.
HEAVY_FEATURES = {**FEATURES, "ids_text": tf.io.FixedLenFeature([clicks.NUM_SLOTS], tf.string)}


def train_files(data_dir: str) -> str:
    return os.path.join(data_dir, "train-*-of-*.tfrecord")


def eval_files(data_dir: str) -> str:
    return os.path.join(data_dir, "eval-*-of-*.tfrecord")


def manifest(data_dir: str) -> dict | None:
    try:
        with open(os.path.join(data_dir, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _example(i, ids, dense, label, logit, text: bool) -> bytes:
    feature = {
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
        "ids": tf.train.Feature(int64_list=tf.train.Int64List(value=ids)),
        "dense": tf.train.Feature(float_list=tf.train.FloatList(value=dense)),
        "label": tf.train.Feature(float_list=tf.train.FloatList(value=[label])),
        "logit": tf.train.Feature(float_list=tf.train.FloatList(value=[logit])),
    }
    if text:
        feature["ids_text"] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[b"id%d" % v for v in ids]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_file(path: str, stream: int, first: int, count: int, seed: int, num_ids: int,
                text: bool) -> None:
    tmp = path + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        done = 0
        while done < count:
            n = min(_GENERATE_BATCH, count - done)
            index = (first + done) // _GENERATE_BATCH
            ids, dense, label, logit = (np.asarray(t) for t in clicks.make_batch(
                stream, index, _GENERATE_BATCH, seed, num_ids))
            offset = (first + done) % _GENERATE_BATCH
            n = min(n, _GENERATE_BATCH - offset)
            for k in range(offset, offset + n):
                writer.write(_example(first + done + k - offset, ids[k], dense[k],
                                      float(label[k]), float(logit[k]), text))
            done += n
    os.replace(tmp, path)


def write(data_dir: str, records: int, *, num_files: int = 8, eval_records: int = 16_384,
          seed: int = 0, num_ids: int = 100_000, text: bool = False) -> dict:
    """Writes the data unless `data_dir` already holds the same (its manifest says so);
    returns the manifest. Raises ValueError if it holds other data."""
    want = {"records": records, "num_files": num_files, "eval_records": eval_records,
            "seed": seed, "num_ids": num_ids, "text": text}
    have = manifest(data_dir)
    if have == want:
        return have
    if have is not None:
        raise ValueError(f"--data_dir {data_dir} holds other data ({have}); use another "
                         f"directory or the same settings")
    os.makedirs(data_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(data_dir, "*.tfrecord*")):
        os.remove(stale)
    bounds = [records * k // num_files for k in range(num_files + 1)]
    for k in range(num_files):
        _write_file(os.path.join(data_dir, f"train-{k:05d}-of-{num_files:05d}.tfrecord"),
                    0, bounds[k], bounds[k + 1] - bounds[k], seed, num_ids, text)
    _write_file(os.path.join(data_dir, "eval-00000-of-00001.tfrecord"), clicks.EVAL_STREAM,
                0, eval_records, seed, num_ids, text)
    with open(os.path.join(data_dir, MANIFEST + ".tmp"), "w") as f:
        json.dump(want, f)
    os.replace(os.path.join(data_dir, MANIFEST + ".tmp"), os.path.join(data_dir, MANIFEST))
    return want


def parse(records):
    """``(ids, dense, label, logit, id)`` of a vector of serialized records."""
    ex = tf.io.parse_example(records, FEATURES)
    return ex["ids"], ex["dense"], ex["label"], ex["logit"], ex["id"]


def parse_heavy(records, num_ids: int = 100_000):
    """Like `parse`, with preprocessing a real pipeline does: the ids arrive as strings and
    are hashed into the table, and every pair of slots is crossed into one more hashed id (a
    feature cross), so a batch looks up 4 + 6 ids per example."""
    ex = tf.io.parse_example(records, HEAVY_FEATURES)
    text = ex["ids_text"]
    hashed = tf.strings.to_hash_bucket_fast(text, num_ids)
    crosses = [tf.strings.to_hash_bucket_fast(
        tf.strings.join([text[:, a], text[:, b]], separator="_x_"), num_ids)
        for a in range(clicks.NUM_SLOTS) for b in range(a + 1, clicks.NUM_SLOTS)]
    ids = tf.concat([hashed, tf.stack(crosses, axis=1)], axis=1)
    return ids, ex["dense"], ex["label"], ex["logit"], ex["id"]
