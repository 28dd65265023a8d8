"""The mesh's call graph with what each hop's Route makes of a request (read by compiler/check/resilience.py).

An edge goes from each Service to what its `calls` names, from each Gateway to each route's destination,
and from such a caller to every service a rule of the destination's Route mirrors to (a copy per request,
never retried). On an edge to C the caller's sidecar applies C's Route: the rules of it that apply to that
caller (a rule with `match.callers` is only on those callers' sidecars, Resolved.rules_on), so the edge's
tries are the most any of those rules makes (`tries_of`: 1 + retries.attempts), and its mirror copies are
those of those rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.diagnostics import Source
from compiler.policy.resolved import Resolved, tries_of
from compiler.policy.route import Route, RouteRule


@dataclass(frozen=True)
class Edge:
    caller: str
    callee: str
    tries: int
    """At most this many tries of the callee per request of the caller (1 for a mirror copy)."""
    mirror: bool = False
    where: Source | None = field(default=None, compare=False)
    """The retries of the rule that makes the most tries (first such rule), or the mirror; None otherwise."""
    subject: str = field(default="", compare=False)
    path: str = field(default="", compare=False)

    @property
    def arrow(self) -> str:
        return f"{self.caller} → {self.callee}" + (" (mirror copy)" if self.mirror else "")


class CallGraph:
    """Nodes are Service, ExternalService and Gateway names; `out[name]` its edges sorted by callee."""

    def __init__(self, view: Resolved) -> None:
        self.view = view
        self.gateways = set(view.gateways)
        self.out: dict[str, list[Edge]] = {n: [] for n in sorted(set(view.views) | set(view.externals) | self.gateways)}
        callers: list[tuple[str, str]] = []
        for svc in view.services.values():
            callers += [(svc.name, d) for d in svc.calls if d != svc.name and self.is_callee(d)]
        for gw in view.gateways.values():
            callers += [(gw.name, d) for d in gw.destinations if self.is_callee(d)]
        edges: dict[tuple, Edge] = {}
        for caller, callee in sorted(set(callers)):
            edges[(caller, callee, False)] = self._edge(caller, callee)
            route = self.route_of(callee)
            for i, rule in self.rules_of(callee, caller):
                for j, mirror in enumerate(rule.mirror):
                    target = mirror.service
                    if target is None or target == callee or target == caller or not self.is_callee(target):
                        continue
                    edges.setdefault(
                        (caller, target, True),
                        Edge(caller, target, 1, True, route.where("rules", i, "mirror", j), route.subject,
                             f"rules[{i}].mirror[{j}]"),
                    )
        self._callers: dict[str, set[str]] = {}
        for key in sorted(edges):
            self.out[key[0]].append(edges[key])
            if not key[2]:
                self._callers.setdefault(key[1], set()).add(key[0])

    def is_callee(self, name: str) -> bool:
        return name in self.view.views or name in self.view.externals

    def is_http(self, name: str) -> bool:
        """Its callers' sidecars route its requests (http or grpc): Route rules, timeouts and retries apply."""
        if name in self.view.views:
            return self.view.views[name].listener == "http"
        return name in self.view.externals and self.view.externals[name].listener == "http"

    def route_of(self, name: str) -> Route | None:
        return self.view.routes.get(name) if self.is_http(name) else None

    def rules_of(self, name: str, caller: str | None = None) -> list[tuple[int, RouteRule]]:
        """The forwarding rules of its Route (index, rule); none without a Route. With `caller`, only those on
        that caller's sidecar (a rule whose `match.callers` leaves the caller out is not there); without, all of
        them (what some caller may apply)."""
        route = self.route_of(name)
        if route is None:
            return []
        rules = enumerate(route.rules) if caller is None else ((i, r) for i, r, _ in self.view.rules_on(name, caller))
        return [(i, r) for i, r in rules if r.to is not None]

    def _edge(self, caller: str, callee: str) -> Edge:
        route = self.route_of(callee)
        best: tuple[int, int] | None = None
        for i, rule in self.rules_of(callee, caller):
            if best is None or tries_of(rule) > best[1]:
                best = (i, tries_of(rule))
        if route is None or best is None or best[1] == 1:
            return Edge(caller, callee, 1)
        i, tries = best
        return Edge(caller, callee, tries, False, route.where("rules", i, "retries"), route.subject, f"rules[{i}].retries")

    def callers_of(self, name: str) -> list[str]:
        """Who sends it requests of their own (mirror copies excluded), sorted."""
        return sorted(self._callers.get(name, ()))

    def adjacency(self) -> dict[str, list[str]]:
        return {n: sorted({e.callee for e in edges}) for n, edges in self.out.items()}

    def name(self, node: str) -> str:
        return f"gateway '{node}'" if node in self.gateways else f"'{node}'"
