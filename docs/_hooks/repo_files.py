"""MkDocs hook: a few Markdown files that live beside the code, served as pages of the site.

`benchmarks/README.md` and its dated `benchmarks/results/*.md`, `cluster_specs/README.md` and
`CHANGELOG.md` belong where they are (next to what they describe, or at the root), yet the
site should show them and check their links. This hook adds them to the site under their
repository paths (``benchmarks/README.md`` is served at ``benchmarks/``), and rewrites each
relative link of every page so that a link written for GitHub works on the site too: it is
resolved against the page's path in the repository (``docs/performance.md``,
``benchmarks/README.md``) and pointed at the page that serves the target. A link to any other
repository file is left as it is, so that a strict build fails on it: name such files in code
spans instead.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re

from mkdocs.structure.files import File

# Repository files (globs, relative to the repository root) served as pages at their own path.
REPO_PAGES = ("benchmarks/README.md", "benchmarks/results/*.md", "cluster_specs/README.md",
              "CHANGELOG.md")
DOCS = "docs"
# An inline Markdown link or image target: ](target) or ](target "title").
_LINK = re.compile(r"(\]\()([^)\s]+)([^)]*\))")
_FENCE = re.compile(r"^(```|~~~)")


def _root(config) -> str:
    return os.path.dirname(os.path.abspath(config.config_file_path))


def on_files(files, config):
    root = _root(config)
    for pattern in REPO_PAGES:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            src_uri = os.path.relpath(path, root).replace(os.sep, "/")
            files.append(File.generated(config, src_uri, abs_src_path=path))
    return files


def _served(repo_path: str) -> bool:
    return any(fnmatch.fnmatchcase(repo_path, pattern) for pattern in REPO_PAGES)


def _repo_path(src_uri: str) -> str:
    """Where a page's source lives in the repository."""
    return src_uri if _served(src_uri) else f"{DOCS}/{src_uri}"


def _site_uri(repo_path: str) -> str | None:
    """The page (source uri) that serves a repository path, or None."""
    if repo_path.startswith(DOCS + "/"):
        return repo_path[len(DOCS) + 1:]
    if _served(repo_path):
        return repo_path
    return None


def _rewrite(target: str, page_repo: str, page_uri: str) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*:|^/|^#", target, re.I):
        return target  # external, absolute, or an anchor on this page
    path, hash_, anchor = target.partition("#")
    repo = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo), path))
    uri = _site_uri(repo)
    if uri is None:
        return target
    rel = posixpath.relpath(uri, posixpath.dirname(page_uri) or ".")
    return rel + hash_ + anchor


def on_page_markdown(markdown, page, config, files):
    page_uri = page.file.src_uri
    page_repo = _repo_path(page_uri)
    out, fenced = [], False
    for line in markdown.split("\n"):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        if not fenced:
            line = _LINK.sub(lambda m: m.group(1) + _rewrite(m.group(2), page_repo, page_uri)
                             + m.group(3), line)
        out.append(line)
    return "\n".join(out)
