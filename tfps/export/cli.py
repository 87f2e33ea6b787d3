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

Bad input (no such directory, no checkpoint, a truncated or missing checkpoint file, a
``--model`` that does not load, exits at import, needs arguments or fails, an ``--out`` that
exists and is not a SavedModel or whose name the filesystem cannot hold, a checkpoint of
another model or a corrupt one) is one line on stderr and exit code 2, with nothing written.
Every check that needs no TensorFlow runs before it is imported; once it is, its C++
start-up lines (``I0000 ... port.cc:153] oneDNN custom operations are on ...``) are kept off
the terminal, as ``tfps-launch`` keeps them off its own (`tfps.launch.run.logs.is_noise`).
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import inspect
import os
import re
import sys
import threading

from tfps import _cli
from tfps.checkpoints import latest_checkpoint
from tfps.errors import TfpsError
from tfps.export import paths
from tfps.launch.run import logs

__all__ = ["main", "parser"]

_PROG = "tfps.export"
# The end of every TF checkpoint index (a LevelDB table): a 48-byte footer whose last 8 bytes
# are kTableMagicNumber, 0xdb4775248b80fb57, little-endian (tensorflow/core/lib/io/format.h).
_FOOTER = 48
_MAGIC = (0xdb4775248b80fb57).to_bytes(8, "little")
# What TF's checkpoint reader says of a damaged file (tensorflow/core/util/tensor_bundle).
_CORRUPT = re.compile(r"checksum|corrupt|Read less bytes|truncated", re.IGNORECASE)
_SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
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
    # No __pycache__ beside the user's file: a refused export leaves nothing behind.
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        return _load(spec, where, name, flag_args)
    finally:
        sys.dont_write_bytecode = writes


def _load(spec: str, where: str, name: str, flag_args: list[str]):
    try:
        if where.endswith(".py"):
            directory = os.path.dirname(os.path.abspath(where))
            sys.path.insert(0, directory)  # the file imports its neighbours, as when run
            loaded = importlib.util.spec_from_file_location("tfps_export_model", where)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure to load is bad input
        what = (f"it exits at import (SystemExit: {e.code!r})" if isinstance(e, SystemExit)
                else f"{type(e).__name__}: {_one_line(e)}")
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: cannot load {where}: {what}"
                              ) from None
    builder = getattr(module, name, None)
    if not callable(builder):
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: {where} has no function {name}")
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):
        signature = None  # a builtin: not judged
    try:
        if signature is not None:
            signature.bind()
    except TypeError:
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: {name}{signature} needs "
                              f"arguments; it is called with none (give it defaults, or "
                              f"set them with absl flags after --)") from None
    _parse_module_flags(spec, flag_args)
    return builder


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _build(builder, spec: str):
    """The model `builder` returns; its failure (or a return that is no model) is one line."""
    try:
        model = builder()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code: bad input here
        what = (f"SystemExit: {e.code!r}" if isinstance(e, SystemExit)
                else f"{type(e).__name__}: {_one_line(e)}")
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: building the model failed: "
                              f"{what}") from None
    if not hasattr(model, "variables") and not hasattr(model, "trainable_variables"):
        raise _cli.UsageError(f"--model {_cli.quote(spec)}: the function returned "
                              f"{type(model).__name__}, not a model")
    return model


def _check_checkpoint_files(prefix: str) -> None:
    """The files of checkpoint `prefix` are there and whole as far as can be told without
    TensorFlow: an index ending in its table footer, every data shard it names."""
    index = prefix + ".index"
    try:
        with open(index, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - len(_MAGIC)))
            tail = f.read()
    except OSError as e:
        raise _cli.UsageError(f"checkpoint {prefix}: cannot read {os.path.basename(index)}: "
                              f"{e.strerror}") from None
    if size < _FOOTER or tail != _MAGIC:
        raise _cli.UsageError(f"checkpoint {prefix}: {os.path.basename(index)} is truncated "
                              f"or not a checkpoint index ({size} bytes, no table footer)")
    found = [m for m in (_SHARD.search(p) for p in glob.glob(glob.escape(prefix) + ".data-*"))
             if m]
    if not found:
        raise _cli.UsageError(f"checkpoint {prefix}: no data file "
                              f"({os.path.basename(prefix)}.data-00000-of-NNNNN)")
    total = int(found[0].group(2))
    missing = sorted(set(range(total)) - {int(m.group(1)) for m in found
                                          if int(m.group(2)) == total})
    if missing:
        raise _cli.UsageError(f"checkpoint {prefix}: data shard {missing[0]} of {total} is "
                              f"missing ({os.path.basename(prefix)}.data-"
                              f"{missing[0]:05d}-of-{total:05d})")


@contextlib.contextmanager
def _tf_lines_hidden():
    """File descriptor 2 through a pipe that drops TF's C++ log lines (the class the launcher
    drops: `tfps.launch.run.logs.is_noise`), while the block runs. TensorFlow writes them to
    the descriptor itself, below Python, at import and when its runtime starts. Only where
    stderr is this process's own (a caller that captured `sys.stderr` gets it as it is)."""
    if sys.stderr is not sys.__stderr__:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    no_gpu = logs.gpu_absent()

    def pump():
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not logs.is_noise(line, no_gpu):
                    view = memoryview(line)
                    while view:
                        view = view[os.write(saved, view):]

    thread = threading.Thread(target=pump, name="tfps-export-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the pump reads to its end
        thread.join(10)
        os.close(saved)


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
    from tfps import _tf
    from tfps.checkpoints.manager import restore_model

    tf = _tf.require()
    # A checkpoint that does not fit makes TF warn, at exit, about every value it did not
    # restore: dozens of lines after the one that says why.
    tf.get_logger().setLevel("ERROR")
    try:
        restore_model(model, prefix)
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:
        detail = _one_line(e)
        # A damaged data file: TF's reader reports a bad checksum (an UNKNOWN OpError), data
        # loss, or a short read (an IndexError from py_checkpoint_reader).
        if isinstance(e, (IndexError, tf.errors.DataLossError, tf.errors.OutOfRangeError)) or \
                _CORRUPT.search(detail):
            raise _cli.UsageError(f"checkpoint {prefix} is corrupt: {detail}") from None
        raise _cli.UsageError(f"checkpoint {prefix} does not fit the model --model "
                              f"{_cli.quote(spec)} builds: {detail}") from None


def parser() -> _cli.Parser:
    """The command line (tests/hostile_cases.py generates bad values for every flag)."""
    out = _cli.Parser(prog=_PROG, description=__doc__.split("\n\n")[0])
    out.add_argument("--model_dir", required=True, help="the training run's directory")
    out.add_argument("--model", required=True,
                     help="FILE.py:FUNCTION or MODULE:FUNCTION that builds the model")
    out.add_argument("--out", required=True, help="the SavedModel directory to write")
    out.add_argument("--overwrite", action="store_true",
                     help="replace a SavedModel already at --out (never anything else)")
    out.add_argument("--serving_fn", default=None,
                     help="a tf.function method of the model (with an input_signature) to "
                          "serve; default the Keras model's call on its inputs")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flag_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    try:
        args = parser().parse_args(argv)
        prefix = latest_checkpoint(args.model_dir, name="--model_dir")
        where, name = _parse_model(args.model)
        if args.serving_fn is not None and not args.serving_fn.isidentifier():
            raise _cli.UsageError(f"--serving_fn {_cli.quote(args.serving_fn)}: not a "
                                  f"method name")
        target = paths.check_target(args.out, overwrite=args.overwrite, name="--out")
        _check_checkpoint_files(prefix)
        # TensorFlow from here on: the inputs are as good as can be told without it. Its C++
        # INFO and WARNING lines would bury the one line this command prints.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with _tf_lines_hidden():
            builder = _load_builder(args.model, where, name, flag_args)
            from tfps.export.saved_model import export_saved_model

            model = _build(builder, args.model)
            _read_checkpoint(model, prefix, args.model)
            written = export_saved_model(model, target, builder=lambda: model,
                                         serving_fn=args.serving_fn, overwrite=args.overwrite)
    except TfpsError as e:
        return _cli.exit_on_error(_PROG, e)
    print(f"{_PROG}: wrote {written} from {prefix}", flush=True)
    return 0
