"""`--format json`: one object on stdout, stable for tools (keys sorted, 2-space indent, ASCII only).

    {
      "format": "meshc-diagnostics",
      "version": 1,                      # of this object; a change that breaks readers increments it
      "tool": {"name": "meshc", "version": "0.1.0"},
      "diagnostics": [                   # sorted as the text prints them
        {
          "code": "E218",
          "severity": "error",           # or "warning"
          "message": "never matches: ...",   # with the positions it names filled in, as in the text
          "subject": "Route 'reviews'",  # or null
          "path": "rules[2]",            # field path inside the subject, or null
          "file": "policies/routes.yaml",    # the policy directory as given + the file; null if none
          "line": 12, "column": 5,       # 1-based; null without a file
          "anchor": "Route/reviews/rules[2]",  # the place without its line (stable when lines move), or null
          "refs": [{"file": ..., "line": ..., "column": ..., "anchor": ...}]  # the other positions named
        }
      ],
      "summary": {"errors": 3, "warnings": 0}
    }
"""

from __future__ import annotations

import json
from pathlib import Path

from compiler.diagnostics import Diagnostic, Source, printable
from compiler.report.common import Batch, all_sorted, file_of
from compiler.report.tool import tool_version

FORMAT_VERSION = 1


def _place(source: Source | None, root: str) -> dict:
    if source is None:
        return {"file": None, "line": None, "column": None, "anchor": None}
    return {
        "file": printable(file_of(source, root), shorten=False),
        "line": source.line,
        "column": source.column,
        "anchor": printable(source.anchor, shorten=False) or None,
    }


def _message(d: Diagnostic, root: str) -> str:
    message = printable(d.message)
    for i, ref in enumerate(d.refs):
        at = _place(ref, root)
        where = f"{at['file']}:{at['line']}:{at['column']}" if ref is not None else "?"
        message = message.replace(f"{{{i}}}", where)
    return message


def item(d: Diagnostic, root: str) -> dict:
    return {
        "code": d.code,
        "severity": d.severity.value,
        "message": _message(d, root),
        "subject": printable(d.subject) or None,
        "path": printable(d.path) or None,
        **_place(d.source, root),
        "refs": [_place(ref, root) for ref in d.refs],
    }


def document(batches: list[Batch]) -> dict:
    items = [item(d, root) for root, d in all_sorted(batches)]
    errors = sum(i["severity"] == "error" for i in items)
    return {
        "format": "meshc-diagnostics",
        "version": FORMAT_VERSION,
        "tool": {"name": "meshc", "version": tool_version()},
        "diagnostics": items,
        "summary": {"errors": errors, "warnings": len(items) - errors},
    }


def render(batches: list[Batch], srcroot: Path) -> str:  # noqa: ARG001 - paths stay as the user named them
    return json.dumps(document(batches), indent=2, sort_keys=True, ensure_ascii=True)
