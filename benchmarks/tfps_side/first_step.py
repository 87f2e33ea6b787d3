"""tfps side of `launch_ready`: what ``tfps-launch`` runs as the chief.

A `tfps.Trainer` on the seed's linear model, one closure of one step; prints
``bench: first_step`` as soon as that step has completed, then exits (the launcher then ends
the cluster). The harness times from spawning ``tfps-launch`` to that line.
"""

import os
import sys

import tfps  # first: binds tf.keras to tf_keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads


def main():
    work = workloads.WORKLOADS["linear"]
    trainer = tfps.Trainer(
        strategy=tfps.make_strategy(), model=work["model"], loss_fn=work["loss"],
        optimizer=work["optimizer"](), dataset_fn=work["dataset_fn"](),
        options=tfps.TrainerOptions(steps_per_closure=1, log_every=0, progress_bar="off"))
    trainer.train(1)
    print("bench: first_step", flush=True)


if __name__ == "__main__":
    main()
