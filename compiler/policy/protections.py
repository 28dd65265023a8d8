"""A version's effective traffic settings: its own (TrafficPolicy `versions`), else the TrafficPolicy's, else
the Mesh's defaults. Called once per version by the resolved view (compiler/policy/resolved.py).

The merge rule is Istio's for a DestinationRule subset's `trafficPolicy`: a field the version gives replaces
the service-level field as a whole (`connection_pool: {max_connections: 1}` keeps the model's defaults for the
pool's other limits, not the service's values); a field it leaves out is the service's.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.policy.models import Mesh
from compiler.policy.traffic import ConnectionPool, HashOn, HealthCheck, OutlierDetection, TrafficPolicy

FIELDS = ("connection_pool", "outlier_detection", "load_balancer", "health_check")
"""The fields a version can set for itself (VersionTraffic)."""


@dataclass(frozen=True, slots=True)
class Protections:
    """One version's effective settings, applied to its clusters on every caller and on its inbound side."""

    connection_pool: ConnectionPool | None
    """None without exactly one Mesh (its defaults are unknown)."""
    outlier_detection: OutlierDetection | None
    """None without exactly one Mesh."""
    lb_policy: str
    """round_robin, least_request, random, ring_hash or maglev."""
    hash_on: HashOn | None
    """The service's key (TrafficPolicy `load_balancer.hash_on`): one per service, set on the callers' routes."""
    health_check: HealthCheck | None
    own: frozenset[str]
    """The fields the version sets itself (a subset of FIELDS)."""
    origin: dict[str, tuple]
    """Field -> where its value is written: ("version", v) | ("service",) | ("mesh",) | ("default",)."""

    @property
    def hashes(self) -> bool:
        return self.lb_policy in ("ring_hash", "maglev")


def protections(mesh: Mesh | None, tp: TrafficPolicy | None, version: str) -> Protections:
    """The effective settings of `version` of the service `tp` protects (tp None: no TrafficPolicy)."""
    own = tp.versions.get(version) if tp is not None else None
    origin: dict[str, tuple] = {}

    def pick(field: str, mesh_default):
        if own is not None and getattr(own, field) is not None:
            origin[field] = ("version", version)
            return getattr(own, field)
        # (A TrafficPolicy always has a load_balancer: the model's round_robin unless it says one.)
        said = field != "load_balancer" or (tp is not None and "load_balancer" in tp.model_fields_set)
        if tp is not None and getattr(tp, field) is not None and said:
            origin[field] = ("service",)
            return getattr(tp, field)
        origin[field] = ("mesh",) if mesh_default is not None else ("default",)
        return mesh_default

    defaults = mesh.defaults if mesh is not None else None
    pool = pick("connection_pool", defaults.connection_pool if defaults else None)
    od = pick("outlier_detection", defaults.outlier_detection if defaults else None)
    lb = pick("load_balancer", None)
    hc = pick("health_check", None)
    return Protections(
        connection_pool=pool,
        outlier_detection=od,
        lb_policy=lb.policy if lb is not None else "round_robin",
        hash_on=tp.load_balancer.hash_on if tp is not None else None,
        health_check=hc,
        own=frozenset(f for f in FIELDS if own is not None and getattr(own, f) is not None),
        origin=origin,
    )
