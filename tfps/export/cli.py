"""``python -m tfps.export``: a SavedModel from the latest checkpoint of a training run.

    python -m tfps.export --model_dir /tmp/recsys --model my_models.py:build_recsys \\
        --out /models/recsys/1
    python -m tfps.export --model_dir /tmp/recsys --model examples/recsys.py:build_model \\
        --out /models/recsys/1 -- --num_ids=20000       # the builder module's absl flags

No cluster: the model is built in this process (``--model FILE.py:FUNCTION`` or
``MODULE:FUNCTION``, a zero-argument function that returns the model), its variables are read
from the latest checkpoint under ``--model_dir`` (TF puts a sharded variable's slices back
together, whatever the number of ps tasks that wrote them), and the export is written as
`tfps.export.export_saved_model` writes it. Checkpoints read: a `tfps.Trainer`'s
(``D/checkpoints``) and `tfps.keras.fit`'s epoch checkpoints (``D/checkpoints/ckpt-<epoch>``),
or a directory that holds a ``checkpoint`` file itself. A tf.Module is served by one of its
`tf.function` methods with an ``input_signature`` (``--serving_fn serve``).

Bad input (no such directory, no checkpoint, a ``--model`` that does not load, an ``--out``
that exists and is not a SavedModel, a checkpoint of another model) is one line on stderr and
exit code 2, with nothing written; the path checks run before TensorFlow is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys

from tfps import _cli
from tfps.checkpoints import latest_checkpoint
from tfps.errors import TfpsError
from tfps.export import paths

__all__ = ["main"]

_PROG = "tfps.export"
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _parse_model(spec: str) -> tuple[str, str]:
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: expected FILE.py:FUNCTION or "
                              f"MODULE:FUNCTION")
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise _cli.UsageError(f"--model {_cli.quote(spec)}: no such file {_cli.quote(where)}")
    elif not _DOTTED.fullmatch(where):
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: {_cli.quote(where)} is neither a "
                              f".py file nor a module name")
    return where, name


def _load_builder(spec: str, where: str, name: str, flag_args: list[str]):
    try:
        if where.endswith(".py"):
            directory = os.path.dirname(os.path.abspath(where))
            sys.path.insert(0, directory)  # the file imports its neighbours, as when run
            loaded = importlib.util.spec_from_file_location("tfps_export_model", where)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except Exception as e:  # noqa: BLE001 - any failure to load is bad input here
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: cannot load {where}: "
                              f"{type(e).__name__}: {e}") from None
    builder = getattr(module, name, None)
    if not callable(builder):
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: {where} has no function {name}")
    _parse_module_flags(spec, flag_args)
    return builder


def _parse_module_flags(spec: str, flag_args: list[str]) -> None:
    """The arguments after ``--`` go to the absl flags the builder's module defines (an
    example's ``--num_ids``); without any, those flags take their defaults."""
    absl_flags = sys.modules.get("absl.flags")
    if absl_flags is None:
        if flag_args:
            raise _cli.UsageError(f"arguments after -- are for the absl flags of --model's "
                                  f"module, and {_cli.quote(spec)} defines none")
        return
    try:
        absl_flags.FLAGS([_PROG, *flag_args])
    except absl_flags.Error as e:
        raise _cli.UsageError(f"arguments after --: {e}") from None


def _read_checkpoint(model, prefix: str, spec: str) -> None:
    from tfps import _tf  # pylint: disable=g-import-not-at-top
    from tfps.checkpoints.manager import restore_model  # pylint: disable=g-import-not-at-top

    tf = _tf.require()
    # A checkpoint that does not fit makes TF warn, at exit, about every value it did not
    # restore: dozens of lines after the one that says why.
    tf.get_logger().setLevel("ERROR")
    try:
        restore_model(model, prefix)
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        detail = " ".join(str(e).split())[:300]
        raise _cli.UsageError(f"checkpoint {prefix} does not fit the model --model "
                              f"{_cli.quote(spec)} builds: {detail}") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flag_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = _cli.Parser(prog=_PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="the training run's directory")
    parser.add_argument("--model", required=True,
                        help="FILE.py:FUNCTION or MODULE:FUNCTION that builds the model")
    parser.add_argument("--out", required=True, help="the SavedModel directory to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a SavedModel already at --out (never anything else)")
    parser.add_argument("--serving_fn", default=None,
                        help="a tf.function method of the model (with an input_signature) "
                             "to serve; default the Keras model's call on its inputs")
    try:
        args = parser.parse_args(argv)
        prefix = latest_checkpoint(args.model_dir, name="--model_dir")
        where, name = _parse_model(args.model)
        if args.serving_fn is not None and not args.serving_fn.isidentifier():
            raise _cli.UsageError(f"--serving_fn {_cli.quote(args.serving_fn)}: not a "
                                  f"method name")
        target = paths.check_target(args.out, overwrite=args.overwrite, name="--out")
        # TensorFlow from here on: the inputs are as good as can be told without it. Its C++
        # INFO and WARNING lines would bury the one line this command prints.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        builder = _load_builder(args.model, where, name, flag_args)
        from tfps.export.saved_model import export_saved_model  # pylint: disable=g-import-not-at-top

        model = builder()
        _read_checkpoint(model, prefix, args.model)
        written = export_saved_model(model, target, builder=lambda: model,
                                     serving_fn=args.serving_fn, overwrite=args.overwrite)
    except TfpsError as e:
        return _cli.exit_on_error(_PROG, e)
    print(f"{_PROG}: wrote {written} from {prefix}", flush=True)
    return 0
