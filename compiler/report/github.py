"""`--format github`: GitHub Actions workflow commands, one per diagnostic, for inline annotations on a PR:

    ::error file=policies/routes.yaml,line=12,col=5,title=E218::Route 'reviews' rules[2]: never matches: ...
    ::warning file=...,title=W203::...

`file` is relative to the repository root (what GitHub expects); a diagnostic without a position has no
file. Escaped as GitHub's toolkit escapes: `%`, CR and LF in the message, and also `:` and `,` in the
properties.
"""

from __future__ import annotations

from pathlib import Path

from compiler.diagnostics import Diagnostic, printable
from compiler.report.common import Batch, all_sorted, described, file_of, repo_path


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(d: Diagnostic, root: str, srcroot: Path) -> str:
    props: list[tuple[str, str]] = []
    if d.source is not None:
        path = file_of(d.source, root)
        props += [
            ("file", printable(repo_path(path, srcroot) or path, shorten=False)),
            ("line", str(max(d.source.line, 1))),
            ("col", str(max(d.source.column, 1))),
        ]
    props.append(("title", d.code))
    rendered = ",".join(f"{key}={escape_property(value)}" for key, value in props)
    kind = "error" if d.is_error else "warning"
    return f"::{kind} {rendered}::{escape_data(described(d, root))}"


def render(batches: list[Batch], srcroot: Path) -> str:
    return "\n".join(command(d, root, srcroot) for root, d in all_sorted(batches))
