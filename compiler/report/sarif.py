"""`--format sarif`: SARIF 2.1.0 (OASIS) on stdout, for code scanning (GitHub's upload-sarif, editors' viewers).

One run; `tool.driver` is meshc with its version and one rule per code that occurs (title and help from the
code catalog, `meshc explain-code`). Each result has its `ruleId`, `level` (error or warning), the message as
the text prints it after `error[CODE]: `, one location (the file relative to the repository root, uriBaseId
%SRCROOT%, with startLine/startColumn, and the anchor as its logical location), the other positions the
message names as related locations, and a partial fingerprint made of the code, the policy directory and the
anchor, so an alert keeps its identity when lines move (a comment added above it). A file outside the
repository is given as an absolute file URI.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import quote

from compiler.diagnostics import Diagnostic, Source, printable
from compiler.report.common import Batch, all_sorted, described, file_of, location, repo_path
from compiler.report.tool import code_help, tool_version

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "%SRCROOT%"
FINGERPRINT = "meshcAnchor/v1"
_LINE = re.compile(r"\b(line|column) \d+")


def _artifact(path: str, srcroot: Path) -> dict:
    rel = repo_path(path, srcroot)
    if rel is None:
        return {"uri": Path(path).resolve().as_uri()}
    return {"uri": quote(rel, safe="/"), "uriBaseId": SRCROOT}


def _physical(source: Source | None, root: str, srcroot: Path) -> dict:
    if source is None:  # the policy directory itself (missing, empty)
        return {"artifactLocation": _artifact(root or ".", srcroot)}
    return {
        "artifactLocation": _artifact(file_of(source, root), srcroot),
        "region": {"startLine": max(source.line, 1), "startColumn": max(source.column, 1)},
    }


def _location(source: Source | None, root: str, srcroot: Path) -> dict:
    out = {"physicalLocation": _physical(source, root, srcroot)}
    if source is not None and source.anchor:
        out["logicalLocations"] = [{"fullyQualifiedName": printable(source.anchor, shorten=False)}]
    return out


def fingerprint(d: Diagnostic, root: str, srcroot: Path) -> str:
    """Stable when lines move: the code, the policy directory, the anchor (else the file) and the message
    without the line and column numbers it names (a load error such as invalid YAML has no anchor)."""
    directory = repo_path(root or ".", srcroot) or root
    message = _LINE.sub(r"\1 N", d.message)  # "(first at line 6)" of a YAML error moves with the lines too
    if d.source is not None and d.source.anchor:
        key = (d.code, directory, d.source.anchor, message)
    else:
        key = (d.code, directory, d.source.file if d.source else "", message)
    return hashlib.sha256("\0".join(key).encode("utf-8", "backslashreplace")).hexdigest()[:32]


def _result(d: Diagnostic, root: str, srcroot: Path, rule_index: int) -> dict:
    result = {
        "ruleId": d.code,
        "ruleIndex": rule_index,
        "level": "error" if d.is_error else "warning",
        "message": {"text": described(d, root)},
        "locations": [_location(d.source, root, srcroot)],
        "partialFingerprints": {FINGERPRINT: fingerprint(d, root, srcroot)},
    }
    related = [  # the positions the message names, by their text in it
        {"id": i, **_location(ref, root, srcroot), "message": {"text": printable(location(ref, root), shorten=False)}}
        for i, ref in enumerate(d.refs)
        if ref is not None
    ]
    if related:
        result["relatedLocations"] = related
    return result


def _rule(code: str, error: bool) -> dict:
    title, text, markdown = code_help(code)
    return {
        "id": code,
        "shortDescription": {"text": title},
        "help": {"text": text, "markdown": markdown},
        "defaultConfiguration": {"level": "error" if error else "warning"},
    }


def document(batches: list[Batch], srcroot: Path) -> dict:
    found = all_sorted(batches)
    codes = sorted({d.code for _, d in found})
    index = {code: i for i, code in enumerate(codes)}
    errors = {d.code for _, d in found if d.is_error}
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "meshc",
                        "version": tool_version(),
                        "rules": [_rule(code, code in errors) for code in codes],
                    }
                },
                "originalUriBaseIds": {SRCROOT: {"description": {"text": "the repository root"}}},
                "columnKind": "unicodeCodePoints",
                "results": [_result(d, root, srcroot, index[d.code]) for root, d in found],
            }
        ],
    }


def render(batches: list[Batch], srcroot: Path) -> str:
    return json.dumps(document(batches, srcroot), indent=2, sort_keys=True, ensure_ascii=True)
