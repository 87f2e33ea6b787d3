"""Griffe extension: docstrings' doctest examples and ``::`` literal blocks as code on the site.

tfps's docstrings carry runnable ``>>>`` examples (the unit lane runs some as doctests) and
reST-style ``Example::`` blocks. Markdown reads a ``>>>`` line as a nested quotation and keeps
the ``::``; this extension fences each run of doctest lines (prompt, continuation and output,
up to a blank line) as a ``pycon`` block and turns a closing ``::`` into ``:`` before the
indented block it introduces. The docstrings themselves are not changed.
"""

from __future__ import annotations

import griffe


def _fence(text: str) -> str:
    out: list[str] = []
    block: list[str] = []
    indent = ""

    def close():
        if block:
            out.extend([f"{indent}```pycon", *block, f"{indent}```"])
            block.clear()

    for line in text.split("\n"):
        stripped = line.lstrip()
        if not block and stripped.startswith(">>>"):
            indent = line[:len(line) - len(stripped)]
            block.append(line)
        elif block and stripped:
            block.append(line)
        else:
            close()
            if stripped.endswith("::") and not stripped.startswith((">>>", "...")):
                line = line[:-1]
            out.append(line)
    close()
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _fence(obj.docstring.value)
