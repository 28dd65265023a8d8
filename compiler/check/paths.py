"""Security paths: rules name paths a normalised request can have, and normalisation keeps them honest.

Sidecars normalise every request path before any rule sees it (Mesh `paths`,
compiler/policy/paths.py): dot segments resolved, repeated slashes merged,
escaped slashes refused or decoded. A security path written in a form no
normalised request has would never match, silently: a deny rule that never
denies, an exemption that never exempts. So that is an error (E270). Keeping
escaped slashes (`escaped_slashes: keep`) lets `/%2Fadmin` pass a rule on
`/admin` and reach an app that may decode it to `/admin`: a warning (W271)
on every policy that names paths.
"""

from __future__ import annotations

import re
from typing import Iterator

from compiler.diagnostics import Diagnostic, Severity
from compiler.policy import Mesh, PolicySet
from compiler.policy.resolved import Resolved

_ESCAPED_SLASH = re.compile(r"%(2f|5c)", re.IGNORECASE)


def check_paths(view: Resolved) -> Iterator[Diagnostic]:
    mesh, policy = view.mesh, view.policy
    if mesh is None:
        return
    for doc, where, field, value in _security_paths(policy):
        problem = _never_requested(value, mesh)
        if problem:
            yield Diagnostic(
                "E270", f"'{value}' never matches a request: {problem}", doc.where(*where), doc.subject, field
            )
    if mesh.paths.escaped_slashes == "keep":
        warned = set()
        for doc, where, field, _ in _security_paths(policy):
            if id(doc) in warned:
                continue
            warned.add(id(doc))
            yield Diagnostic(
                "W271",
                "escaped slashes are kept (paths.escaped_slashes: keep, at {0}): '/%2Fadmin' does not match a "
                "rule on '/admin', but an app that decodes %2F serves it as '/admin'; use reject (the default), "
                "redirect or decode",
                doc.where(*where), doc.subject, field, severity=Severity.WARNING,
                refs=(mesh.where("paths", "escaped_slashes"),),
            )


def _security_paths(policy: PolicySet):
    """(document, position path, field path, value) of every prefix or exact path of a security rule."""
    for ap in policy.authorization_policies:
        for kind in ("allow", "deny"):
            for i, rule in enumerate(getattr(ap, kind)):
                for j, p in enumerate(rule.paths):
                    for k in ("prefix", "exact", "regex"):
                        value = getattr(p, k)
                        if value is not None:
                            yield ap, (kind, i, "paths", j, k), f"{kind}[{i}].paths[{j}].{k}", None if k == "regex" else value
    for ra in policy.request_authentications:
        for i, rule in enumerate(ra.rules):
            for j, value in enumerate(rule.paths):
                yield ra, ("rules", i, "paths", j), f"rules[{i}].paths[{j}]", value


def _never_requested(value: str | None, mesh: Mesh) -> str | None:
    if value is None:  # a regex: not analysed
        return None
    if "?" in value or "#" in value:
        return "rules match the path alone, without query string or fragment"
    if "//" in value:
        return "repeated slashes are merged before rules run"
    if any(seg in (".", "..") for seg in value.split("/")):
        return "dot segments are resolved before rules run"
    if _ESCAPED_SLASH.search(value) and mesh.paths.escaped_slashes != "keep":
        action = "refused (400)" if mesh.paths.escaped_slashes == "reject" else "decoded"
        return f"requests with escaped slashes are {action} before rules run (paths.escaped_slashes)"
    return None
