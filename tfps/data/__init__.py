"""Training input: how each closure gets its batches.

* `tfps.data.feed`: the protocol every input implements (`ClosureInput`, `Feed`). Pure.
* `tfps.data.iterators`: the input of a ``dataset_fn`` (a per-worker dataset, PSS's own way),
  stacked by the steps of a closure.
* `tfps.data.files`: `FileInput`, TFRecord or CSV files read exactly once per epoch, also when
  workers die; `tfps.data.readers`: its modes, `Shard` and `Service` (TF's tf.data service,
  whose processes are `tfps.data.service`); `tfps.data.ledger`: the chief's ledger of units;
  `tfps.data.sources` and `tfps.data.records`: files, formats, counts, bad records.

The package imports nothing itself: `import tfps` stays free of TensorFlow. The names below
load on first use (PEP 562); see docs/data.md.
"""

# name -> module that defines it.
_LAZY = {
    "FileInput": "tfps.data.files",
    "Shard": "tfps.data.readers",
    "Service": "tfps.data.readers",
    "DataError": "tfps.data.sources",
    "Ledger": "tfps.data.ledger",
    "Visitation": "tfps.data.ledger",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfps.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
