"""Route rules for some caller versions (`callers: [{service, versions}]`), live in the cluster in a box.

The mesh is policies/kubernetes-callers: reviews (v1, v3) calls ratings (v1, v2); ratings' Route sends the
calls of reviews v3 to v2 and every other call to v1; productpage calls reviews. Both versions of reviews
share one sidecar configuration (one ConfigMap), so the version is not in it: the sidecar Component's patch
gives reviews' sidecar container the env var MESHC_VERSION from the pod's `version` label (the downward API),
the outbound listener copies it into each new connection's filter state (`meshc.caller_version`), and the
route matches it there. The box starts each pod's sidecar with the env the patch declares, resolved for that
pod as kubelet resolves `fieldRef: metadata.labels['version']` (harness.podenv); nothing here names the
variable or its value. Traffic comes from a load client inside the caller's pod, as its app would send it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.ir import CALLER_VERSION_ENV
from compiler.lower import VERSION_HEADER
from compiler.policy import Mesh
from harness import compile_policy, load_json_yaml, report, wait_until, write_policy
from harness.manifests import sidecar_spec
from harness.traffic import failures, tally

pytestmark = pytest.mark.envoy

PORT = 9080  # every sidecar's inbound port (each pod has its own network)
APP_PORT = 9081  # where each pod's app listens, behind its sidecar
N = 100  # calls per case; every one must land on the version the rule says
FORGED = {  # what reviews v1's app could send to pass for v3
    VERSION_HEADER: "v2",
    "x-meshc-caller-version": "v3",
    "meshc.caller_version": "v3",
    "x-envoy-downstream-service-cluster": "reviews-v3",
    "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/reviews;version=v3",
}


def _docs(mesh_doc, versions: tuple[str, ...] = ("v3",)) -> list:
    return [
        mesh_doc,
        {"kind": "Service", "name": "productpage", "port": PORT, "app_port": APP_PORT, "calls": ["reviews"]},
        {"kind": "Service", "name": "reviews", "port": PORT, "app_port": APP_PORT, "calls": ["ratings"],
         "versions": {"v1": {}, "v3": {}}},
        {"kind": "Service", "name": "ratings", "port": PORT, "app_port": APP_PORT, "versions": {"v1": {}, "v2": {}}},
        {"kind": "Route", "service": "reviews", "rules": [{"to": {"v1": 50, "v3": 50}}]},
        {
            "kind": "Route",
            "service": "ratings",
            "rules": [
                {"match": {"callers": [{"service": "reviews", "versions": list(versions)}]}, "to": {"v2": 100}},
                {"to": {"v1": 100}},
            ],
        },
    ]


def _container_env(out: Path, service: str) -> list[dict]:
    """The `env` of the sidecar container in the Component's patch for `service` (harness.manifests)."""
    return sidecar_spec(out, service).env


def _process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_the_patch_gives_the_version_env_to_reviews_only(tmp_path):
    """reviews is the only caller whose sidecar applies a rule limited to some of its versions, so only its
    sidecar needs to know its version: its container (and no other's) gets MESHC_VERSION from
    `metadata.labels['version']`, and its outbound listener is the only one with the set_filter_state filter."""
    write_policy(tmp_path / "policy", _docs(Mesh(name="shop", kubernetes={"cluster_domain": "cluster.local"})))
    result = compile_policy(tmp_path / "policy", tmp_path / "out", config_root=None)
    out = tmp_path / "out"
    want = [{"name": CALLER_VERSION_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['version']"}}}]
    envs = {s: _container_env(out, s) for s in ("productpage", "reviews", "ratings")}
    assert envs == {"productpage": [], "reviews": want, "ratings": []}, envs
    filters = {}
    for s in ("productpage", "reviews", "ratings"):
        listeners = load_json_yaml(out / s / "listeners.yaml")["resources"]
        filters[s] = sorted({f["name"] for l in listeners for ch in l.get("filter_chains", []) for f in ch["filters"]
                             if f["name"].endswith("set_filter_state")})
    assert filters == {"productpage": [], "reviews": ["envoy.filters.network.set_filter_state"], "ratings": []}, filters
    labels = {s.service: s.kubernetes.version_label for s in result.ir.sidecars if s.kubernetes is not None}
    assert labels == {"productpage": None, "reviews": "version", "ratings": None}, labels


def test_calls_from_reviews_v3_reach_ratings_v2_and_v1_cannot_pass_for_v3(kube_cluster):
    """reviews v3's app: 100 calls on fresh connections and 100 on one kept-alive connection, all answered by
    ratings v2's pods (both of them); reviews v1's app: 100 calls all by v1's pod, and 100 more carrying
    headers that name v3 or v2 still all by v1's pod. The caller sidecars' own counts (upstream_rq_200 per
    version cluster) agree. Each reviews sidecar runs with MESHC_VERSION = its pod's `version` label."""
    c = kube_cluster
    v1, v3 = _up(c)
    seen_env = {p.name: _process_env(p.envoy.pid).get(CALLER_VERSION_ENV) for p in c.pods.values()}
    assert seen_env == {"reviews-v1-0": "v1", "reviews-v3-0": "v3", "ratings-v1-0": None, "ratings-v2-0": None,
                        "ratings-v2-1": None}, seen_env
    before = {p.name: _answered(p) for p in (v1, v3)}

    v3_fresh, v3_kept = _run(c, v3), _run(c, v3, keepalive=True)
    v1_plain, v1_forged = _run(c, v1), _run(c, v1, headers=FORGED)
    chosen = {p.name: {k: _answered(p)[k] - before[p.name][k] for k in ("v1", "v2")} for p in (v1, v3)}
    v2_pods = {p.name for p in c.pods_of("ratings", "v2")}
    report("caller versions in pods: ratings for reviews v3 only", v3_fresh=tally(v3_fresh),
           v3_kept_alive=tally(v3_kept), v1=tally(v1_plain), v1_forging=tally(v1_forged),
           chosen_by_caller_sidecars=chosen, sidecar_env=seen_env)
    for samples in (v3_fresh, v3_kept):
        assert tally(samples, "version") == {"v2": N}, tally(samples, "version")
    assert set(tally(v3_fresh)) == v2_pods, ("every v2 pod answers", tally(v3_fresh))
    for samples in (v1_plain, v1_forged):
        assert tally(samples) == {"ratings-v1-0": N}, tally(samples)
    assert chosen == {"reviews-v3-0": {"v1": 0, "v2": 2 * N}, "reviews-v1-0": {"v1": 2 * N, "v2": 0}}, chosen


def test_moving_the_rule_to_v1_reloads_the_routes_without_restart(kube_cluster):
    """Rebuilt with the rule for reviews v1 instead of v3: the sidecar patch (and its env) stays the same, only
    reviews' ConfigMap changes; kubelet's volume swap reloads both reviews sidecars' routes (same PIDs), and
    then v1's 100 calls all reach ratings v2's pods and v3's 100 all v1's pod."""
    c = kube_cluster
    v1, v3 = _up(c)
    pids = {p.name: p.envoy.pid for p in c.pods.values()}
    patch = c.out / "kubernetes" / "sidecar" / "patch-reviews.yaml"
    patch_before = patch.read_text()
    routes = {p.name: p.envoy.dynamic_route_configs()["outbound"]["version_info"] for p in (v1, v3)}
    c.build(_docs(c.mesh_doc(), versions=("v1",)))
    assert patch.read_text() == patch_before, "the same patch: no pod restarts for this change"
    updated = c.sync_volumes()
    assert sorted(updated) == ["reviews-v1-0", "reviews-v3-0"], updated
    for p in (v1, v3):
        wait_until(lambda p=p: p.envoy.dynamic_route_configs()["outbound"]["version_info"] != routes[p.name], 15,
                   message=f"the new routes in force on {p.name}")
    from_v1, from_v3 = _run(c, v1), _run(c, v3)
    report("caller versions in pods: the rule moved from v3 to v1", volumes_updated=updated, v1=tally(from_v1),
           v3=tally(from_v3))
    assert tally(from_v1, "version") == {"v2": N}, tally(from_v1)
    assert tally(from_v3) == {"ratings-v1-0": N}, tally(from_v3)
    assert {p.name: p.envoy.pid for p in c.pods.values()} == pids, "no sidecar restarted"
    for p in (v1, v3):
        assert not p.envoy.config_problems(), (p.name, p.envoy.config_problems())


def _up(c):
    """reviews v1 and v3 (one pod each), ratings v1 (one pod) and v2 (two); returns reviews' pods once both route
    to every published ratings pod."""
    c.build(_docs(c.mesh_doc()))
    c.run_pods([("reviews", "v1", 1), ("reviews", "v3", 1), ("ratings", "v1", 1), ("ratings", "v2", 2)])
    v1, v3 = c.pod("reviews-v1-0"), c.pod("reviews-v3-0")
    for caller in (v1, v3):
        c.wait_routable(caller, "ratings")
    return v1, v3


def _run(c, caller, **kwargs) -> list:
    """N calls to ratings from the app of `caller` (a pod), every one answered 200."""
    samples = c.load(caller, "ratings", count=N, **kwargs).start().wait().samples()
    assert len(samples) == N and not failures(samples), (caller.name, len(samples), failures(samples)[:5])
    return samples


def _answered(pod) -> dict[str, int]:
    """The pod's sidecar's count of 200s per ratings version cluster."""
    return {v: pod.envoy.stat(f"cluster.outbound|ratings|{v}.upstream_rq_200") for v in ("v1", "v2")}
