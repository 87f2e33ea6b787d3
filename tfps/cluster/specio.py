"""One bounded reader for every cluster description tfps parses: spec files and ``TF_CONFIG``.

A cluster spec is a few lines; anything that is not must fail fast with one line, never hang,
recurse, or expand:

* spec files must be regular files (not a FIFO that blocks forever, not ``/dev/zero``) of at
  most `MAX_BYTES`, UTF-8 (a BOM is allowed);
* YAML is read by a `yaml.SafeLoader` that refuses duplicate keys (PyYAML silently keeps the
  last ``ps:``), nesting deeper than `MAX_DEPTH` (PyYAML's composer recurses: 5 000 ``[`` give
  a RecursionError), and more than `MAX_NODES` nodes counting every alias expansion (a
  "billion laughs" document is small but expands without bound);
* JSON (``.json`` files, ``TF_CONFIG``) gets the same depth and duplicate-key rules.

Errors are `tfps.errors.ClusterSpecError` naming the source, and quote at most a short prefix
of any value.

>>> loads_json('{"ps": ["h:1"], "ps": ["h:2"]}', "TF_CONFIG")
Traceback (most recent call last):
...
tfps.errors.ClusterSpecError: cluster spec TF_CONFIG: duplicate key 'ps'
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from tfps.errors import ClusterSpecError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "load_file", "loads_json", "loads_yaml"]

# A spec of 10 000 tasks is ~300 KB; nothing legitimate comes near this.
MAX_BYTES = 1 << 20
# role -> list -> address is depth 3; TF_CONFIG adds one level.
MAX_DEPTH = 16
# Nodes a YAML document may build, aliases counted at their expanded size.
MAX_NODES = 100_000


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def load_file(path: str | os.PathLike) -> Any:
    """The parsed content of a spec file (JSON for ``*.json``, YAML otherwise)."""
    source = os.fspath(path)
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError as e:
        raise ClusterSpecError(f"cannot read file: {e.strerror or e}", source) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else
                    "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or socket")
            raise ClusterSpecError(f"cannot read file: it is {kind}, not a regular file",
                                   source)
        if info.st_size > MAX_BYTES:
            raise ClusterSpecError(f"file is {info.st_size} bytes; a cluster spec is at most "
                                   f"{MAX_BYTES} bytes", source)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:  # grew while we read it
        raise ClusterSpecError(f"file is over {MAX_BYTES} bytes", source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ClusterSpecError(f"cannot read file: not UTF-8 text (byte {e.start} is "
                               f"{data[e.start:e.start + 1]!r})", source) from None
    if "\x00" in text:
        raise ClusterSpecError("cannot read file: it holds NUL bytes (not a text file)", source)
    return loads_json(text, source) if source.endswith(".json") else loads_yaml(text, source)


def _check_depth(text: str, source: str) -> None:
    """Refuses JSON nested deeper than MAX_DEPTH before the recursive parser sees it."""
    depth, in_string, escaped = 0, False, False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ClusterSpecError(f"nested deeper than {MAX_DEPTH} levels", source)
        elif c in "]}":
            depth -= 1


def loads_json(text: str, source: str) -> Any:
    """Parses JSON text with the depth, size and duplicate-key rules."""
    if len(text) > MAX_BYTES:
        raise ClusterSpecError(f"{len(text)} characters; at most {MAX_BYTES}", source)
    _check_depth(text, source)

    def pairs(items):
        out = {}
        for key, value in items:
            if key in out:
                raise ClusterSpecError(f"duplicate key {_short(key)}", source)
            out[key] = value
        return out

    def no_constant(name):  # NaN, Infinity: not JSON, and not a number tfps can use
        raise ClusterSpecError(f"not valid JSON: {name} is not allowed", source)

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=no_constant)
    except ValueError as e:
        if isinstance(e, ClusterSpecError):
            raise
        raise ClusterSpecError(f"not valid JSON: {str(e).splitlines()[0][:120]}",
                               source) from None


def _loader_class():
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader with a depth limit, a node budget (aliases at full size), no duplicates."""

        def __init__(self, stream, source):
            super().__init__(stream)
            self._source, self._depth, self._nodes, self._sizes = source, 0, 0, {}

        def _fail(self, message):
            raise ClusterSpecError(message, self._source)

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                anchor = self.peek_event().anchor
                self._count(self._sizes.get(anchor, 1))
                return super().compose_node(parent, index)
            self._depth += 1
            if self._depth > MAX_DEPTH:
                self._fail(f"nested deeper than {MAX_DEPTH} levels")
            start = self._nodes
            anchor = getattr(self.peek_event(), "anchor", None)
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            self._count(1)
            if anchor is not None:
                self._sizes[anchor] = self._nodes - start
            return node

        def _count(self, n):
            self._nodes += n
            if self._nodes > MAX_NODES:
                self._fail(f"more than {MAX_NODES} YAML nodes (aliases counted expanded)")

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: let SafeLoader say so
                    break
                if duplicate:
                    self._fail(f"duplicate key {_short(str(key))} (line "
                               f"{key_node.start_mark.line + 1})")
            return super().construct_mapping(node, deep=deep)

    return BoundedLoader


def loads_yaml(text: str, source: str) -> Any:
    """Parses one YAML document with the depth, node-budget and duplicate-key rules."""
    import yaml

    if len(text) > MAX_BYTES:
        raise ClusterSpecError(f"{len(text)} characters; at most {MAX_BYTES}", source)
    loader = None
    try:
        # The constructor already reads the text: a control character (a terminal escape,
        # a lone surrogate) raises its ReaderError here, not in get_single_data.
        loader = _loader_class()(text, source)
        return loader.get_single_data()
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterSpecError(f"not valid YAML: {first[:160]}", source) from None
    except RecursionError:  # a construct path the depth limit does not cover
        raise ClusterSpecError(f"nested deeper than {MAX_DEPTH} levels", source) from None
    finally:
        if loader is not None:
            loader.dispose()
