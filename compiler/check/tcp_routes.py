"""A Route for a tcp service: one rule that splits connections between versions (`to`), nothing else.

A tcp proxy sees bytes, not requests: there is no path, header or method to match, no request to retry,
time, rewrite, copy or fail. So a tcp service's Route has exactly one rule, with `to` only (E208 names the
first field that cannot apply). Each connection goes to one version, drawn by the weights.

Where the draw happens (compiler/lower/tcp.py): on one host, the callee's sidecar (its inbound listener
knows each version's endpoints; every caller's connection arrives there); in pods, each caller's sidecar,
which reaches a version through its headless Service. A version that lists its own endpoints has no pods
and no headless Service: in pods a split cannot reach it (E229).
"""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic
from compiler.policy import Route
from compiler.policy.resolved import Resolved

ONLY = "to"
"""The one rule field a tcp Route takes."""


def check_tcp_route(view: Resolved, route: Route) -> Iterator[Diagnostic]:
    for i, rule in enumerate(route.rules):
        if i > 0:
            yield Diagnostic(
                "E208",
                f"tcp service '{route.service}': a tcp Route has one rule (connections carry no request for a "
                "second rule to match); put every version's weight in the first rule's `to`",
                route.where("rules", i),
                route.subject,
                f"rules[{i}]",
            )
            break
        given = rule.model_fields_set
        extra = [k for k in sorted(given) if k not in (ONLY, "match") and getattr(rule, k) not in (None, [])]
        if "match" in given and rule.match.model_fields_set:
            extra.insert(0, "match")
        for field in extra:
            yield Diagnostic(
                "E208",
                f"`{field}` does not apply to tcp service '{route.service}': its connections carry bytes, not "
                "HTTP requests; a tcp Route's rule takes only `to` (weights per connection)",
                route.where("rules", i, field),
                route.subject,
                f"rules[{i}].{field}",
            )
        if rule.to is None:
            continue
        sv = view.views.get(route.service)
        if sv is None or not sv.in_pods:
            continue
        for version, weight in sorted(rule.to.items()):
            if weight and version in sv.versions and version not in sv.app_port_versions:
                yield Diagnostic(
                    "E229",
                    f"version '{version}' of tcp service '{route.service}' lists its own endpoints, so it has no "
                    "pods and no headless Service: in pods each caller draws a version per connection and reaches "
                    "it by its headless Service, and a connection to any pod goes to that pod's own version",
                    route.where("rules", i, "to", version),
                    route.subject,
                    f"rules[{i}].to",
                )
