"""Manifests for external engines: a Kubeflow TFJob (+ NetworkPolicy), a Slurm sbatch script.

Placeholder until the multi-host issue lands. The CLI calls `add_arguments(parser)` while
building its parser and `run(args)` when ``args.emit`` is set.
"""


def add_arguments(parser) -> None:
    group = parser.add_argument_group("emit for external engines")
    group.add_argument("--emit", choices=("tfjob", "slurm"), default=None,
                       help="print a manifest for an external engine instead of launching")


def run(args) -> int:
    raise NotImplementedError("--emit is not built yet")
