"""What every reporter needs: a diagnostic's place as a path, its message as one line, the repository root."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from compiler.diagnostics import Diagnostic, Source, printable


@dataclass(frozen=True)
class Batch:
    """The diagnostics of one policy directory, `root` as the user named it (the prefix of every file)."""

    root: str
    diagnostics: tuple[Diagnostic, ...]

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.diagnostics, key=Diagnostic.sort_key)


def all_sorted(batches: list[Batch]) -> list[tuple[str, Diagnostic]]:
    """(root, diagnostic) in the order the text prints them: directory by directory, then file and line."""
    return [(b.root, d) for b in batches for d in b.sorted()]


def file_of(source: Source, root: str) -> str:
    """The file as the text format prints it: the policy directory as given, then the file inside it."""
    return f"{root.rstrip('/')}/{source.file}" if root else source.file


def location(source: Source, root: str) -> str:
    return f"{file_of(source, root)}:{source.line}:{source.column}"


def described(d: Diagnostic, root: str) -> str:
    """`subject path: message` with the positions the message names filled in, escaped like the text line
    (which is `file:line:column: error[CODE]: ` and this)."""
    what = " ".join(p for p in (d.subject, d.path) if p)
    message = printable(d.message)
    for i, ref in enumerate(d.refs):
        at = printable(location(ref, root), shorten=False) if ref is not None else "?"
        message = message.replace(f"{{{i}}}", at)
    return f"{printable(what)}: {message}" if what else message


def find_srcroot(start: Path) -> Path:
    """The repository root: the nearest folder from `start` up that holds `.git`, else `start` itself."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def repo_path(path: str, srcroot: Path) -> str | None:
    """`path` (as the user named it, relative to the working directory or absolute) relative to the
    repository root, in `/` form; None when it lies outside."""
    absolute = Path(os.path.abspath(path))
    try:
        rel = absolute.relative_to(srcroot.resolve())
    except ValueError:
        try:  # a symlinked working directory: compare real paths
            rel = Path(os.path.realpath(absolute)).relative_to(srcroot.resolve())
        except ValueError:
            return None
    return posixpath.normpath(rel.as_posix())
