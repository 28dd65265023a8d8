"""A tcp service's Route -> the weighted clusters of a tcp proxy (TcpListener.split), per connection.

Where the draw happens depends on where the versions can be told apart:
- on one host every version is reached through the service's own sidecar (placement.version_reach), so
  its inbound listener draws, over its inbound clusters (each version's endpoints);
- in pods each version has a headless Service (its pods), so each caller's outbound tcp listener draws,
  over its outbound clusters; the pod that answers is of the drawn version, and its sidecar delivers
  to its own app (compiler/check/tcp_routes.py refuses versions without pods there: E229).
A Route applies to every caller alike, so both give each caller the same shares.
"""

from __future__ import annotations

from compiler.diagnostics import Source
from compiler.ir import Cluster, Target
from compiler.policy.resolved import ServiceView


def weights(sv: ServiceView) -> tuple[tuple[str, int | float], ...]:
    """The tcp Route's versions with a weight above 0, sorted (nothing without a Route: the default version)."""
    route = sv.route
    if route is None or sv.listener != "tcp" or not route.rules or route.rules[0].to is None:
        return ()
    return tuple((v, w) for v, w in sorted(route.rules[0].to.items()) if w)


def split(sv: ServiceView, clusters: dict[str, Cluster], here: bool) -> tuple[Cluster | None, tuple[Target, ...]]:
    """(the one cluster, or None to keep the default; the weighted targets when there are several).

    `here`: whether this side draws (the callee's inbound on one host, a caller's outbound in pods).
    Envoy's tcp_proxy refuses a weight of 0, so those versions are left out."""
    drawn = weights(sv) if here else ()
    if not drawn:
        return None, ()
    if len(drawn) == 1:
        return clusters[drawn[0][0]], ()
    return None, tuple(Target(clusters[v], w) for v, w in drawn)


def source(sv: ServiceView, default: Source) -> Source:
    """Where a drawing listener's weights come from: the tcp Route's rule (`default` without one)."""
    return sv.route.where("rules", 0, "to") if weights(sv) else default
