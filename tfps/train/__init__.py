"""`tfps.Trainer` in small rooms, after Orbit's Controller / StandardTrainer split.

* `options`: `TrainerOptions` and `TrainResult` (pure: no TensorFlow);
* `trainer`: `Trainer`, the public facade: builds the model and optimizer under the strategy,
  owns the rooms below, evaluates and describes;
* `arguments` (pure): every argument of the Trainer checked where it enters;
  `optimizers`: the conversion to legacy optimizers, every setting carried over or refused;
* `loop`: the chief's loop (schedule, drain, records, checkpoint cadence, exact step count);
* `steps`: what runs on a worker: one replica step (pull, tape, push), packed closures;
* `accumulate`: local gradient accumulation (K micro-batches, one pull, one push);
* `staleness`: the update counter on ps and the staleness-aware learning rate;
* `checkpoints`: restore and save, atomic, stale temp directories cleaned.

The package imports nothing itself: `import tfps` stays free of TensorFlow. Use `tfps.Trainer`.
"""
