"""The foundation, live: compiled configs run in real Envoys and route real traffic.

Mesh under test: frontend -> reviews (v1, v2). The test process plays
frontend's app (it calls frontend's outbound listener with `Host: reviews`);
reviews' versions are Upstream apps behind the reviews sidecar. Every request
crosses two Envoys: frontend's outbound side picks the version and marks it
with x-meshc-version, reviews' inbound side delivers to that version and
strips the marker.
"""

from __future__ import annotations

import pytest

from compiler.lower import VERSION_HEADER
from compiler.policy import HeaderMatch, Match, Route, RouteRule
from harness import load_json_yaml, resource_names, wait_until

pytestmark = pytest.mark.envoy

N = 20  # requests per assertion: all of them must land right, so 20 is plenty and fast
BETA = {"x-user-group": "beta"}


def beta_route(default: dict[str, int] | None = None) -> Route:
    return Route(
        service="reviews",
        rules=[
            RouteRule(match=Match(headers=[HeaderMatch(name="x-user-group", exact="beta")]), to={"v2": 100}),
            RouteRule(to=default or {"v1": 100}),
        ],
    )


def shop(mesh, v1, v2, route: Route | None = None) -> list:
    """frontend -> reviews; `v1`/`v2`: the upstream app(s) of each version."""
    return [
        mesh.mesh_doc(),
        mesh.service("frontend", calls=["reviews"]),
        mesh.service("reviews", versions={"v1": v1, "v2": v2}),
        route or beta_route(),
    ]


def ok(response) -> dict:
    """The upstream's JSON echo of a response that must be a 200 (a reload must not fail requests)."""
    assert response.status == 200, (response.status, response.text[:200])
    return response.json()


def versions_of(responses) -> list[str]:
    return [ok(r)["version"] for r in responses]


def test_version_routing_through_two_sidecars(live_mesh):
    v1 = live_mesh.upstream("reviews", "v1")
    v2 = live_mesh.upstream("reviews", "v2")
    live_mesh.build(shop(live_mesh, v1, v2))
    front = live_mesh.start("frontend")
    reviews = live_mesh.start("reviews")
    before_front = front.stats(r"^cluster\.outbound\|reviews\|v[12]\.upstream_rq_total$")
    before_reviews = reviews.stats(r"^cluster\.inbound\|reviews\|v[12]\.upstream_rq_total$")

    default = live_mesh.call("frontend", "reviews", "/reviews/1", N)
    assert versions_of(default) == ["v1"] * N
    assert (v1.count, v2.count) == (N, 0)

    beta = live_mesh.call("frontend", "reviews", "/reviews/2", N, headers=BETA)
    assert versions_of(beta) == ["v2"] * N
    assert (v1.count, v2.count) == (N, N)

    # The caller's app cannot pick a version by sending the marker itself: the caller's sidecar overwrites it.
    spoofed = live_mesh.call("frontend", "reviews", "/reviews/1", N, headers={VERSION_HEADER: "v2"})
    assert versions_of(spoofed) == ["v1"] * N
    assert (v1.count, v2.count) == (2 * N, N)

    # The apps see the request as sent (path, caller's headers), never the mesh's marker.
    for req in v1.requests + v2.requests:
        assert VERSION_HEADER not in req.headers, req.headers
        assert req.headers.get("host") == "reviews"
    assert {r.path for r in v1.requests} == {"/reviews/1"}
    assert {r.headers.get("x-user-group") for r in v2.requests} == {"beta"}

    # Both sidecars carried the traffic, on the clusters the policy names.
    def grew(sidecar, before, direction):
        after = sidecar.stats(rf"^cluster\.{direction}\|reviews\|v[12]\.upstream_rq_total$")
        name = f"cluster.{direction}|reviews|{{}}.upstream_rq_total".format
        return {v: after.get(name(v), 0) - before.get(name(v), 0) for v in ("v1", "v2")}

    # Envoy updates upstream_rq_total when a request is sent upstream, before we read the response: no race.
    assert grew(front, before_front, "outbound") == {"v1": 2 * N, "v2": N}
    assert grew(reviews, before_reviews, "inbound") == {"v1": 2 * N, "v2": N}


def test_every_cluster_and_route_arrives(live_mesh):
    """Under --reject-unknown-dynamic-fields, Envoy runs exactly the clusters and route configs the files hold."""
    v1 = live_mesh.upstream("reviews", "v1")
    v2 = live_mesh.upstream("reviews", "v2")
    live_mesh.build(shop(live_mesh, v1, v2))
    # Start without the harness's acceptance check: this test reports what arrived itself.
    sidecars = {s: live_mesh.start(s, require_accepted=False) for s in ("frontend", "reviews")}
    expected_routes = {"frontend": {"inbound", "outbound"}, "reviews": {"inbound"}}

    for service, sidecar in sidecars.items():
        assert "--reject-unknown-dynamic-fields" in sidecar.command
        clusters_file = live_mesh.out / service / "clusters.yaml"
        assert sidecar.cds_file == clusters_file
        assert sidecar.cluster_names() == set(resource_names(clusters_file)), service
        dumped_clusters = sidecar.dynamic_clusters()
        assert set(dumped_clusters) == set(resource_names(clusters_file)), service
        cds_version = load_json_yaml(clusters_file)["version_info"]
        assert {c["version_info"] for c in dumped_clusters.values()} == {cds_version}, service

        # Every route configuration the listeners subscribe to is in effect, at the version of its file.
        assert set(sidecar.rds_files) == expected_routes[service], service
        dumped = sidecar.dynamic_route_configs()
        problems = f"{service}: stats {sidecar.xds_stats()}\n{sidecar.log_tail(10)}"
        assert set(dumped) == expected_routes[service], f"route configs in effect: {sorted(dumped)}; {problems}"
        for name, path in sidecar.rds_files.items():
            assert path.parent == live_mesh.out / service, (name, path)
            assert name in resource_names(path), (name, path)
            assert dumped[name]["version_info"] == load_json_yaml(path)["version_info"], (name, problems)
        assert sidecar.config_problems() == [], problems


def test_hot_reload_moves_an_endpoint(live_mesh):
    """A version's endpoint moves to another app: clusters.yaml changes, the same Envoy picks it up (CDS)."""
    old = live_mesh.upstream("reviews", "v1")
    new = live_mesh.upstream("reviews", "v1")
    v2 = live_mesh.upstream("reviews", "v2")
    live_mesh.build(shop(live_mesh, old, v2))
    live_mesh.start("frontend")
    reviews = live_mesh.start("reviews")
    pid, cds_before = reviews.pid, reviews.stat("cluster_manager.cds.update_success")
    assert {ok(r)["instance"] for r in live_mesh.call("frontend", "reviews", n=3)} == {old.endpoint}

    live_mesh.build(shop(live_mesh, new, v2))  # same out/, file by file
    wait_until(
        lambda: ok(live_mesh.call_one("frontend", "reviews"))["instance"] == new.endpoint,
        timeout=10,
        interval=0.1,
        message="traffic to move to the new endpoint",
    )
    moved = old.count
    assert {ok(r)["instance"] for r in live_mesh.call("frontend", "reviews", n=N)} == {new.endpoint}
    assert old.count == moved

    assert reviews.pid == pid and reviews.running
    assert reviews.server_info()["command_line_options"]["restart_epoch"] == 0
    assert reviews.stat("cluster_manager.cds.update_success") > cds_before
    assert reviews.config_problems() == []


def test_hot_reload_changes_route_weights(live_mesh):
    """v1:100 -> v2:100: frontend's routes.yaml changes, the same Envoy picks it up (RDS)."""
    v1 = live_mesh.upstream("reviews", "v1")
    v2 = live_mesh.upstream("reviews", "v2")
    live_mesh.build(shop(live_mesh, v1, v2))
    front = live_mesh.start("frontend")
    live_mesh.start("reviews")
    rds = "http.outbound_http.rds.outbound.update_success"
    pid, uptime_before, rds_before = front.pid, front.server_info()["uptime_all_epochs"], front.stat(rds)
    assert versions_of(live_mesh.call("frontend", "reviews", n=3)) == ["v1"] * 3

    live_mesh.build(shop(live_mesh, v1, v2, beta_route({"v2": 100})))
    wait_until(
        lambda: ok(live_mesh.call_one("frontend", "reviews"))["version"] == "v2",
        timeout=10,
        interval=0.1,
        message="default traffic to move to v2",
    )
    count_v1 = v1.count
    assert versions_of(live_mesh.call("frontend", "reviews", n=N)) == ["v2"] * N
    assert v1.count == count_v1

    assert front.pid == pid and front.running
    info = front.server_info()
    assert info["command_line_options"]["restart_epoch"] == 0
    assert info["uptime_all_epochs"] == info["uptime_current_epoch"]
    assert _seconds(info["uptime_current_epoch"]) >= _seconds(uptime_before)
    assert front.stat(rds) > rds_before
    assert front.config_problems() == []


def test_static_mode_runs(live_mesh):
    v1 = live_mesh.upstream("reviews", "v1")
    v2 = live_mesh.upstream("reviews", "v2")
    live_mesh.build(shop(live_mesh, v1, v2), static=True)
    assert not (live_mesh.out / "frontend" / "clusters.yaml").exists()
    front = live_mesh.start("frontend")
    reviews = live_mesh.start("reviews")
    assert front.static and reviews.static

    assert versions_of([live_mesh.call_one("frontend", "reviews")]) == ["v1"]
    assert versions_of([live_mesh.call_one("frontend", "reviews", headers=BETA)]) == ["v2"]
    assert VERSION_HEADER not in v1.requests[0].headers and VERSION_HEADER not in v2.requests[0].headers
    assert front.cluster_names() == {"inbound|frontend|default", "outbound|reviews|v1", "outbound|reviews|v2"}


def _seconds(text: str) -> int:
    return int(text.rstrip("s"))
