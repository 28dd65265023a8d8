"""meshc documents -> policy files: mesh.yaml, one <service>.yaml per service, gateways.yaml, external.yaml.

Deterministic: files sorted by name, documents in a fixed kind order, keys in the order a person writes them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from compiler.importer.model import Doc

_ORDER = ("Mesh", "Service", "Route", "TrafficPolicy", "AuthorizationPolicy", "RequestAuthentication", "Gateway",
          "ExternalService")
HEADER = "# Written by `meshc import istio`: review the comments, then own this file.\n"


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):  # lists indented under their key
        return super().increase_indent(flow, False)


def _flow_leaves(data):
    """Short lists of scalars in flow style (`methods: [GET]`), everything else in block style."""
    if isinstance(data, dict):
        return {k: _flow_leaves(v) for k, v in data.items()}
    if isinstance(data, list):
        if all(not isinstance(x, (dict, list)) for x in data) and len(data) <= 8:
            return _Flow(data)
        return [_flow_leaves(x) for x in data]
    return data


class _Flow(list):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def render_doc(doc: Doc) -> str:
    lines = [f"# {c}" for c in doc.comments]
    text = yaml.dump(_flow_leaves(doc.body), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120,
                     default_flow_style=False)
    return "\n".join(lines + [text.rstrip("\n")]) + "\n"


def render(docs: list[Doc]) -> dict[str, str]:
    """File name -> its text."""
    by_file: dict[str, list[Doc]] = {}
    for doc in docs:
        by_file.setdefault(doc.file, []).append(doc)
    out = {}
    for name in sorted(by_file):
        items = sorted(by_file[name], key=lambda d: _ORDER.index(d.body["kind"]))
        out[name] = HEADER + "---\n".join(render_doc(d) for d in items)
    return out


def write_files(files: dict[str, str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (dest / name).write_text(text, encoding="utf-8")
