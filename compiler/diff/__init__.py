"""`meshc diff`: what a change of policies means, section by section (see compiler/diff/model.py).

Both sides are checked and built in memory (compiler/diff/sides.py). The comparison reads the resolved
view for what the policies say (routes.py, compare.py), the IR for who may call what (authz.py), and the
built files for what each sidecar must do (compiler/rollout.py, as `meshc build` reports it).
"""

from __future__ import annotations

import yaml

from compiler.diff import compare
from compiler.diff.authz import pair_changes
from compiler.diff.model import Change, Report
from compiler.diff.routes import route_changes
from compiler.diff.sides import Side
from compiler.diff.tokens import token_changes
from compiler.rollout import _load, _sidecar, changes
from compiler.sourcemap import SOURCEMAP


def _without_provenance(node):
    """A loaded file without what follows from where the policies are written: the policy place each
    resource records (`metadata.filter_metadata.meshc.source`) and the file's `version_info`."""
    if isinstance(node, dict):
        return {
            k: ({x: y for x, y in v.items() if x != "source"} if k == "meshc" and isinstance(v, dict)
                else _without_provenance(v))
            for k, v in node.items()
            if k != "version_info"
        }
    if isinstance(node, list):
        return [_without_provenance(v) for v in node]
    return node


def _provenance_only(old: bytes | None, new: bytes | None) -> bool:
    """The two files differ only in the policy places they record (documents moved to other files or
    reordered), which changes no behaviour."""
    if old is None or new is None:
        return False
    try:
        return _without_provenance(_load(old)) == _without_provenance(_load(new))
    except yaml.YAMLError:
        return False


def rollout_changes(old: dict[str, bytes], new: dict[str, bytes]) -> list[Change]:
    out = []
    for c in changes(old, new):
        if c.action in ("added", "removed"):
            out.append(Change("rollout", c.service, "", c.action, None, None))
        elif c.action != "unchanged":
            info = c.as_json()
            if c.files and all(_provenance_only(old.get(f"{c.service}/{f}"), new.get(f"{c.service}/{f}")) for f in c.files):
                info["provenance_only"] = True
            out.append(Change("rollout", c.service, "", "changed", None, info))
    outside = sorted(
        rel for rel in set(old) | set(new)
        if _sidecar(rel) is None and rel != SOURCEMAP and old.get(rel) != new.get(rel)
    )
    if outside:
        out.append(Change("rollout", "kubernetes", "manifests", "changed", None, outside))
    return out


def diff(old: Side, new: Side) -> Report:
    """The report of two sides that both passed their checks."""
    a, b = old.view, new.view
    found: list[Change] = []
    found += compare.services(a, b)
    found += route_changes(a, b)
    found += compare.protections(a, b)
    found += compare.security(a, b)
    for p in pair_changes(old.ir, new.ir):
        found.append(Change("authorization", f"{p.caller} -> {p.service}", p.request, "changed", p.before, p.after))
    for name, path, before, after in token_changes(old.ir, new.ir):
        found.append(Change("security", name, f"request without a token: {path}", "changed", before, after))
    found += compare.gateways(a, b)
    found += compare.externals(a, b)
    found += compare.mesh(a, b)
    found += rollout_changes(old.files, new.files)
    return Report(old.label, new.label, found)
