"""`tfps-launch --doctor`: preflight checks before a long job.

Placeholder until the multi-host issue lands. The CLI calls `add_arguments(parser)` while
building its parser and `run(args)` when ``args.doctor`` is set.
"""


def add_arguments(parser) -> None:
    group = parser.add_argument_group("preflight")
    group.add_argument("--doctor", action="store_true", help="check the setup and exit")


def run(args) -> int:
    raise NotImplementedError("--doctor is not built yet")
