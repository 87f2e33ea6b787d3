"""Training input: how each closure gets its batches.

* `tfps.data.feed`: the protocol every input implements (`ClosureInput`, `Feed`). Pure.
* `tfps.data.iterators`: the input of a ``dataset_fn`` (a per-worker dataset, PSS's own way),
  stacked by the steps of a closure.

The package imports nothing itself: `import tfps` stays free of TensorFlow.
"""
