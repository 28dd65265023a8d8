"""Route rules for some callers only (`match.callers`, Istio's sourceLabels), live on one host.

The mesh is policies/callers placed by the harness: productpage and reviews both call ratings (v1, v2);
ratings' Route sends `callers: [reviews]` to v2 and everyone else to v1. productpage (v1, v2) sits behind
the Gateway `ingress` (plain HTTP); its Route sends `callers: [ingress]` with `x-canary: 1` to v2, else v1,
and reviews calls productpage too. A rule with callers is decided when the mesh is built: it is written
into the route table of those callers' Envoys only (the sidecar's outbound routes, the gateway's edge
routes) and left out of everyone else's, so nothing a request carries can make another caller's Envoy
apply it. The test process plays the apps: it sends each request to the caller's outbound listener (or to
the gateway's listener) with `Host: <callee>`; what is asserted is which version's app answered, counted by
the apps themselves.
"""

from __future__ import annotations

from collections import Counter

import pytest

from compiler.lower import VERSION_HEADER
from harness import report, send_many, wait_until
from harness.gateway import start_gateway

pytestmark = pytest.mark.envoy

N = 40  # calls per case; every one must land on the version the rule says
GW = "ingress"
FORGED = {  # what an app could send to pass for reviews or for the gateway's canary
    VERSION_HEADER: "v2",
    "x-canary": "1",
    "x-envoy-downstream-service-cluster": "reviews",
    "x-forwarded-client-cert": "By=spiffe://x/ns/default/sa/ratings;URI=spiffe://x/ns/default/sa/reviews",
    "user-agent": "reviews",
}


class CallersMesh:
    """The started mesh: apps by service and version, the gateway's listener, and the documents it was built from."""

    def __init__(self, live_mesh):
        self.mesh = live_mesh
        self.apps = {
            (s, v): live_mesh.upstream(s, v) for s in ("ratings", "productpage") for v in ("v1", "v2")
        }
        address = live_mesh.loopback.address()
        self.gateway_doc = {
            "kind": "Gateway",
            "name": GW,
            "address": address,
            "admin_port": live_mesh.loopback.port(address),
            "listeners": [{"name": "http", "port": live_mesh.loopback.port(address)}],
            "routes": [{"to": "productpage"}],
        }

    def docs(self, *, ratings_callers: bool = True) -> list:
        m = self.mesh
        ratings_rules = [{"match": {"callers": ["reviews"]}, "to": {"v2": 100}}, {"to": {"v1": 100}}]
        if not ratings_callers:  # v2 for everyone: the rule for the others would never match (E218)
            ratings_rules = [{"to": {"v2": 100}}]
        return [
            m.mesh_doc(),
            m.service("productpage", calls=["ratings"],
                      versions={v: self.apps["productpage", v] for v in ("v1", "v2")}),
            m.service("reviews", calls=["ratings", "productpage"]),
            m.service("ratings", versions={v: self.apps["ratings", v] for v in ("v1", "v2")}),
            {"kind": "Route", "service": "ratings", "rules": ratings_rules},
            {
                "kind": "Route",
                "service": "productpage",
                "rules": [
                    {"match": {"callers": [GW], "headers": [{"name": "x-canary", "exact": "1"}]}, "to": {"v2": 100}},
                    {"to": {"v1": 100}},
                ],
            },
            self.gateway_doc,
        ]

    def start(self) -> None:
        result = self.mesh.build(self.docs())
        assert not [d for d in result.diagnostics if d.is_error], [d.render() for d in result.diagnostics]
        self.mesh.start("productpage", "reviews", "ratings")
        self.gateway = start_gateway(self.mesh, GW)

    def counts(self, service: str) -> Counter:
        return Counter({v: self.apps[service, v].count for v in ("v1", "v2")})

    def calls(self, caller: str, callee: str, n: int = N, **kwargs) -> Counter:
        """`n` calls from `caller`'s app to `callee`: the versions that answered, as the callee's apps counted them
        (every call must be a 200 whose body names the app that the count went up for)."""
        before = self.counts(callee)
        got = Counter(_version(r) for r in self.mesh.call(caller, callee, n=n, **kwargs))
        assert self.counts(callee) - before == got, (caller, callee, got, self.counts(callee) - before)
        return got

    def through_gateway(self, n: int = N, **kwargs) -> Counter:
        """`n` requests from outside through the gateway's http listener: the productpage versions that answered."""
        before = self.counts("productpage")
        host, port = self.gateway.edge("http")
        got = Counter(_version(r) for r in send_many(host, port, n, host_header="shop.example.com", **kwargs))
        assert self.counts("productpage") - before == got, (got, self.counts("productpage") - before)
        return got


def _version(response) -> str:
    assert response.status == 200, (response.status, response.headers, response.text[:300])
    return response.json()["version"]


def test_rule_for_reviews_only_moves_reviews_and_nobody_else(live_mesh):
    """reviews' 40 ratings calls all reach v2, productpage's 40 all v1; productpage forging reviews' marks (the
    version header, a caller's identity header, a canary header) still gets v1 every time: its sidecar has no
    rule that could send it to v2."""
    cm = CallersMesh(live_mesh)
    cm.start()
    from_reviews = cm.calls("reviews", "ratings")
    from_productpage = cm.calls("productpage", "ratings")
    assert from_reviews == Counter({"v2": N}), from_reviews
    assert from_productpage == Counter({"v1": N}), from_productpage
    forged = Counter()
    for name, value in FORGED.items():
        forged += cm.calls("productpage", "ratings", n=N // 4, headers={name: value})
    forged += cm.calls("productpage", "ratings", n=N // 4, headers=FORGED)
    assert forged == Counter({"v1": (len(FORGED) + 1) * (N // 4)}), forged
    # Built that way: only reviews' outbound route table holds a route to ratings v2 at all.
    assert _routes_to(live_mesh["reviews"], "ratings") == 2 and _routes_to(live_mesh["productpage"], "ratings") == 1
    report("callers: ratings rule for reviews only", reviews=dict(from_reviews), productpage=dict(from_productpage),
           productpage_forging=dict(forged))


def test_rule_for_the_gateway_applies_at_the_gateway_only(live_mesh):
    """productpage's `callers: [ingress]` + `x-canary: 1` rule: through the gateway with the header 40/40 v2,
    without it 40/40 v1; reviews calling productpage with the header 40/40 v1 (the rule is not on its sidecar)."""
    cm = CallersMesh(live_mesh)
    cm.start()
    canary = cm.through_gateway(headers={"x-canary": "1"})
    plain = cm.through_gateway()
    other = cm.through_gateway(headers={"x-canary": "2"})
    from_reviews = cm.calls("reviews", "productpage", headers={"x-canary": "1"})
    from_reviews_forged = cm.calls("reviews", "productpage", n=N // 4, headers=FORGED)
    assert canary == Counter({"v2": N}), canary
    assert plain == Counter({"v1": N}) and other == Counter({"v1": N}), (plain, other)
    assert from_reviews == Counter({"v1": N}), from_reviews
    assert from_reviews_forged == Counter({"v1": N // 4}), from_reviews_forged
    assert _routes_to(cm.gateway, "productpage", edge=True) == 2
    assert _routes_to(live_mesh["reviews"], "productpage") == 1
    report("callers: productpage canary for the gateway only", gateway_canary=dict(canary), gateway_plain=dict(plain),
           reviews_with_header=dict(from_reviews))


def test_removing_the_callers_limit_applies_without_restart(live_mesh):
    """Rebuilt with ratings' rule for every caller: productpage's sidecar reloads its routes once (same PID, its
    outbound RDS update_success up by exactly one, no rejection) and then sends all 40 calls to v2, like reviews."""
    cm = CallersMesh(live_mesh)
    cm.start()
    assert cm.calls("productpage", "ratings") == Counter({"v1": N})
    pids = {name: sc.pid for name, sc in live_mesh.sidecars.items()}
    pp = live_mesh["productpage"]
    rds = _rds_stat(pp, "outbound")
    before = pp.stat(rds)
    result = live_mesh.build(cm.docs(ratings_callers=False))
    actions = {c.service: c.action for c in result.rollout.sidecars}
    # reviews' table loses its v1 fallback, productpage's gains v2; ratings and the gateway are untouched.
    assert actions == {"productpage": "reload", "reviews": "reload", "ratings": "unchanged", GW: "unchanged"}, actions
    pp.wait_for_stat(rds, lambda v: v > before)
    wait_until(lambda: cm.calls("productpage", "ratings", n=1) == Counter({"v2": 1}), 10, message="v2 for productpage")
    after_switch = cm.calls("productpage", "ratings")
    from_reviews = cm.calls("reviews", "ratings")
    assert after_switch == Counter({"v2": N}) and from_reviews == Counter({"v2": N}), (after_switch, from_reviews)
    reloads = pp.stat(rds) - before
    assert reloads == 1, f"productpage's routes were reloaded {reloads} times"
    assert {name: sc.pid for name, sc in live_mesh.sidecars.items()} == pids, "no Envoy restarted"
    for sc in live_mesh.sidecars.values():
        assert sc.running and not sc.config_problems(), (sc.service, sc.config_problems())
    report("callers limit removed on a running mesh", rollout=actions, productpage_rds_reloads=reloads,
           productpage_after=dict(after_switch))


def _rds_stat(sidecar, route_config: str) -> str:
    """The update_success counter of the sidecar's RDS subscription to `route_config`."""
    names = [k for k in sidecar.xds_stats() if k.endswith(f".rds.{route_config}.update_success")]
    assert len(names) == 1, (route_config, sorted(sidecar.xds_stats()))
    return names[0]


def _routes_to(envoy, callee: str, *, edge: bool = False) -> int:
    """How many routes the Envoy's accepted route tables hold for `callee` (the virtual host named after it, or,
    at a gateway, every route of its edge tables)."""
    count = 0
    for config in envoy.dynamic_route_configs().values():
        for vh in config["route_config"].get("virtual_hosts", []):
            if edge or vh["name"] == callee:
                count += len(vh.get("routes", []))
    return count
