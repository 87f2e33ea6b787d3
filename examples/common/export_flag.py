"""The ``--export_dir`` flag the training examples share, checked before anything starts.

A path that an export could not write (a file, a directory that is not a SavedModel, a
read-only place) is refused when the flags are parsed, not after training. An existing
SavedModel there is replaced (a rerun refreshes its export).
"""

from __future__ import annotations

from absl import flags

from tfps.errors import ConfigError
from tfps.export import paths


def define_export_dir() -> None:
    flags.DEFINE_string("export_dir", None, "Write the trained model here as a SavedModel with "
                        "un-sharded variables (replacing an earlier export there).")

    def check(path) -> bool:
        if path:
            try:
                paths.check_target(path, overwrite=True, name="--export_dir")
            except ConfigError as e:
                raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator("export_dir", check)
