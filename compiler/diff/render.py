"""The three formats of a diff report: text (a terminal), Markdown (a pull-request comment), JSON (tools).

Text and Markdown print the same changes in the same order (sections as in model.SECTIONS, subjects
sorted); JSON is `Report.as_json()` (schema `meshc-diff/1`, documented in the README).
"""

from __future__ import annotations

import json

from compiler.diff.model import SECTION_TITLES, Change, Report
from compiler.diff.routes import weights_text
from compiler.diagnostics import printable

MARK = {"added": "+", "removed": "-", "changed": "~", "moved": ">"}
COLLAPSE_OVER = 10
"""Markdown: a section with more rows than this is folded in a <details> block."""


def value_text(value, section: str = "", item: str = "") -> str:
    """A plain value as a reviewer reads it: weights as `v1 90%, v2 10%`, objects as `key=value` without
    their empty parts, absent as `none`; a very long stretch (an inline JWKS) keeps its start and end
    around an ellipsis (the JSON format has it whole)."""
    return printable(_value_text(value, section, item))


def _value_text(value, section: str, item: str) -> str:
    if section == "traffic" and item.startswith("rule") and (value is None or isinstance(value, dict)):
        return weights_text(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        parts = [f"{k}={_inner(v)}" for k, v in value.items() if v not in (None, [], {}, "")]
        return ", ".join(parts) or "{}"
    if isinstance(value, list):
        return ", ".join(_inner(v) for v in value) or "none"
    return str(value)


def _inner(value) -> str:
    if isinstance(value, dict):
        return "{" + _value_text(value, "", "") + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inner(v) for v in value) + "]"
    return _value_text(value, "", "")


def rollout_text(c: Change) -> str:
    if c.kind == "added":
        return "new sidecar (starts with the new output)"
    if c.kind == "removed":
        return "sidecar removed (stop it)"
    if c.subject == "kubernetes" and c.item == "manifests":
        return f"manifests changed ({_some(c.after)}): kubectl apply"
    info = c.after
    files = ", ".join(info.get("files", []))
    if info["action"] == "restart":
        return f"RESTART NEEDED: {'; '.join(info.get('why', []))} (changed: {files})"
    if info.get("provenance_only"):
        return f"reload ({files}): only the policy places they record changed, no behaviour"
    return f"reload ({files})"


def _some(files: list[str], shown: int = 8) -> str:
    """The first files of a long list, and how many more (the JSON format lists them all)."""
    more = f" and {len(files) - shown} more" if len(files) > shown else ""
    return ", ".join(files[:shown]) + more


def change_text(c: Change) -> str:
    """One line of the text format, without the subject."""
    if c.section == "rollout":
        return rollout_text(c)
    before, after = value_text(c.before, c.section, c.item), value_text(c.after, c.section, c.item)
    item = c.item or ("added" if c.kind == "added" else "removed" if c.kind == "removed" else "")
    if c.kind == "added":
        return f"{item}: {after}" if c.item else f"added: {after}"
    if c.kind == "removed":
        return f"{item}: removed (was {before})" if c.item else f"removed (was {before})"
    return f"{item}: {before} -> {after}"


def _header(report: Report) -> str:
    summary = report.summary()
    if not report.different:
        return "no differences: both sides mean the same mesh"
    if all(c.section == "rollout" and isinstance(c.after, dict) and c.after.get("provenance_only") for c in report.changes):
        return (f"the same meaning; {len(report.changes)} sidecar(s) reload only because the policy places their "
                "files record moved")
    sidecars = ", ".join(
        "Kubernetes manifests changed" if what == "manifests" else f"{n} {what}" for what, n in summary["sidecars"].items()
    )
    return f"{summary['changes']} change(s)" + (f"; sidecars: {sidecars}" if sidecars else "")


def text(report: Report) -> str:
    lines = [f"meshc diff {report.old} -> {report.new}: {_header(report)}"]
    for section, changes in report.by_section().items():
        lines += ["", SECTION_TITLES[section]]
        subject = None
        for c in changes:
            if c.subject != subject:
                subject = c.subject
                lines.append(f"  {subject}")
            lines.append(f"    {MARK[c.kind]} {change_text(c)}")
    return "\n".join(printable(line, shorten=False) for line in lines) + "\n"


def _cell(text: str, style: str = "") -> str:
    """Table cell text: escaped for the terminal and for Markdown (a policy value cannot close the table,
    open HTML, a code span or emphasis); then `code` or `bold`."""
    text = printable(text, shorten=False).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("|", "\\|").replace("`", "'")
    if style == "code":
        return f"`{text}`"
    text = text.replace("*", "\\*").replace("_", "\\_")
    return f"**{text}**" if style == "bold" and text else text or " "


def _table(headers: list[str], rows: list[list], code: int | None = None) -> list[str]:
    """`rows`: cell texts; a (text, style) pair for a styled one."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [_cell(*x) if isinstance(x, tuple) else _cell(x) for x in row]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _rows(section: str, changes: list[Change]) -> tuple[list[str], list[list]]:
    if section == "rollout":
        return ["Sidecar", "Must", "Why"], [[(c.subject, "code"), *_rollout_cells(c)] for c in changes]
    if section == "authorization":
        return ["Caller -> service", "Request", "Before", "After"], [
            [c.subject, c.item, c.before, (c.after, "bold")] for c in changes
        ]
    return ["", "Subject", "What", "Before", "After"], [
        [MARK[c.kind], (c.subject, "code"), (c.item, "code") if c.item else c.kind, value_text(c.before, section, c.item),
         value_text(c.after, section, c.item)]
        for c in changes
    ]


def _rollout_cells(c: Change) -> list:
    if c.kind in ("added", "removed"):
        return ["start (new sidecar)" if c.kind == "added" else "stop (removed)", ""]
    if c.subject == "kubernetes" and c.item == "manifests":
        return ["apply manifests", _some(c.after)]
    info = c.after
    if info["action"] == "restart":
        return [("restart", "bold"), "; ".join(info.get("why", [])) + f" ({', '.join(info.get('files', []))})"]
    only = " (only the policy places they record: no behaviour changes)" if info.get("provenance_only") else ""
    return ["reload", ", ".join(info.get("files", [])) + only]


def markdown(report: Report) -> str:
    lines = [f"## meshc diff {_cell(report.old, 'code')} → {_cell(report.new, 'code')}", "", _cell(_header(report))]
    for section, changes in report.by_section().items():
        headers, rows = _rows(section, changes)
        lines += ["", f"### {SECTION_TITLES[section]}", ""]
        table = _table(headers, rows)
        if len(rows) > COLLAPSE_OVER:
            lines += [f"<details><summary>{len(rows)} changes</summary>", "", *table, "", "</details>"]
        else:
            lines += table
    return "\n".join(lines) + "\n"


def as_json(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


FORMATS = {"text": text, "markdown": markdown, "json": as_json}
