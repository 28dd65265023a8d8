"""Route rules for some callers only (`match.callers`): Istio's `sourceLabels`, by service and version.

Every caller's sidecar routes its own calls (the Route is applied there), so a rule that names its callers is
simply left out of every other caller's route table: the choice is made when the mesh is built, like Istio's
control plane leaves a `sourceLabels` route out of the proxies it does not select. Nothing in a request can
forge it, and nothing is added to requests.

A caller's *version* is not known when the mesh is built, since every version of a service shares its
sidecar's configuration: in pods each pod's sidecar learns its own version from the pod's `version` label
(the Kubernetes downward API puts it in the sidecar's environment, and Envoy keeps it with each connection the
app opens, see compiler/emit/listeners.py), and the rule matches on it. On one host (and in Docker) the
versions of a service share one sidecar process that cannot tell which version's app is calling, so a rule
that names caller versions is refused there (the check says so, it never matches silently nothing).
"""

from __future__ import annotations

from compiler.policy.base import PolicyModel
from compiler.policy.types import Name


class Caller(PolicyModel):
    """A caller a rule applies to: a Service of the mesh (or only some of its versions), or a Gateway.

    Written as a name (`callers: [productpage]`) or as `{service: reviews, versions: [v2]}`.
    """

    service: Name
    """A Service or a Gateway that calls (routes to) this Route's service."""
    versions: list[Name] = []
    """Only calls from these versions of the caller (empty: every version). Needs the caller in pods
    (Mesh `kubernetes`): the sidecar reads its pod's `version` label."""

    def applies_to(self, caller: str, version: str | None = None) -> bool:
        """Does a call from `caller` (its version `version`, None: any or unknown) fall under this entry?"""
        return self.service == caller and (not self.versions or version is None or version in self.versions)


def normalise(callers: list) -> list[Caller]:
    """`callers` as written (names or Caller objects) -> Caller objects, in order."""
    return [Caller(service=c) if isinstance(c, str) else c for c in callers]


def versions_for(callers: list[Caller], caller: str) -> tuple[str, ...] | None:
    """The caller versions a rule with these `callers` is limited to on `caller`'s sidecar: None when the rule
    does not apply there at all, () when it applies to every version of it, else the versions (sorted).
    No callers: the rule applies everywhere (())."""
    if not callers:
        return ()
    entries = [c for c in callers if c.service == caller]
    if not entries:
        return None
    if any(not c.versions for c in entries):
        return ()
    return tuple(sorted({v for c in entries for v in c.versions}))


def covers_callers(a: list[Caller], b: list[Caller]) -> bool:
    """True when every call that callers list `b` admits is admitted by `a` too (no callers: every call)."""
    if not a:
        return True
    if not b:
        return False
    for entry in b:
        allowed = versions_for(a, entry.service)
        if allowed is None:
            return False
        if allowed and (not entry.versions or not set(entry.versions) <= set(allowed)):
            return False
    return True
