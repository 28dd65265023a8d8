"""Per-version traffic policies (TrafficPolicy `versions`): the merge rule in the resolved view, the lowering
into each version's clusters, the checks (W603 per version pool) and `meshc diff`. Live behaviour:
tests/test_live_per_version_policy.py; refusals with their messages: tests/errors/per_version_*."""

from __future__ import annotations

from pathlib import Path

from compiler.check import check
from compiler.diff.compare import protections as diff_protections
from compiler.load import load
from compiler.lower import lower
from compiler.policy.resolved import resolve

ROOT = Path(__file__).resolve().parent.parent
CASE = ROOT / "policies" / "per-version-policy"


def _view(path: Path = CASE):
    loaded = load(path)
    assert not [d.render() for d in loaded.diagnostics if d.is_error]
    return resolve(loaded.policy)


def _write(tmp_path: Path, traffic: str, route: str = "") -> Path:
    text = (CASE / "mesh.yaml").read_text()
    text = text[: text.index("kind: TrafficPolicy")] + traffic + route
    (tmp_path / "mesh.yaml").write_text(text)
    return tmp_path


def test_a_version_field_replaces_the_service_field_as_a_whole():
    sv = _view()["reviews"]
    v1, v2 = sv.protections["v1"], sv.protections["v2"]
    # v1 keeps the service's settings.
    assert (v1.connection_pool.max_connections, v1.connection_pool.max_pending_requests) == (100, 100)
    assert v1.outlier_detection.consecutive_5xx == 10 and v1.lb_policy == "round_robin"
    assert v1.health_check.path == "/healthz" and v1.own == frozenset()
    # v2's pool is its own, whole: what it leaves out is the model's default (1024), not the service's 100.
    assert (v2.connection_pool.max_connections, v2.connection_pool.max_pending_requests) == (1, 1)
    assert v2.connection_pool.max_requests == 1024
    assert v2.outlier_detection.consecutive_5xx == 2 and v2.lb_policy == "least_request"
    assert v2.health_check.path == "/ready"
    assert v2.own == {"connection_pool", "outlier_detection", "load_balancer", "health_check"}
    assert v2.origin["connection_pool"] == ("version", "v2") and v1.origin["connection_pool"] == ("service",)


def test_a_version_without_its_own_field_falls_back_to_the_mesh_defaults(tmp_path):
    view = _view(_write(tmp_path, "kind: TrafficPolicy\nservice: reviews\nversions:\n  v2:\n    load_balancer: {policy: random}\n"))
    sv = view["reviews"]
    mesh = view.mesh.defaults
    assert sv.protections["v1"].connection_pool == mesh.connection_pool
    assert sv.protections["v2"].connection_pool == mesh.connection_pool
    assert sv.protections["v2"].origin["connection_pool"] == ("mesh",)
    assert (sv.protections["v1"].lb_policy, sv.protections["v2"].lb_policy) == ("round_robin", "random")
    assert view.pool_of("reviews", "v2") == mesh.connection_pool


def test_each_version_cluster_gets_its_own_protection_on_the_caller_and_the_callee():
    ir = lower(_view())
    sidecars = {s.service: s for s in ir.sidecars}
    for sidecar, direction in (("productpage", "outbound"), ("reviews", "inbound")):
        clusters = {c.version: c.protection for c in sidecars[sidecar].clusters if c.service == "reviews"
                    and c.direction == direction}
        assert (clusters["v1"].max_connections, clusters["v2"].max_connections) == (100, 1), direction
        assert (clusters["v1"].lb_policy, clusters["v2"].lb_policy) == ("round_robin", "least_request")
        assert (clusters["v1"].outlier.consecutive_5xx, clusters["v2"].outlier.consecutive_5xx) == (10, 2)
        if direction == "inbound":  # health checks go where the instances are
            assert (clusters["v1"].health_check.path, clusters["v2"].health_check.path) == ("/healthz", "/ready")
        else:
            assert clusters["v1"].health_check is None and clusters["v2"].health_check is None


def test_the_example_builds_without_diagnostics():
    assert [d.render() for d in check(_view())] == []


def test_retries_that_can_fill_a_version_pool_warn_at_that_version(tmp_path):
    traffic = (
        "kind: TrafficPolicy\nservice: reviews\nversions:\n  v2:\n    connection_pool: {max_requests: 2}\n"
    )
    route = "---\nkind: Route\nservice: reviews\nrules:\n  - to: {v1: 90, v2: 10}\n    retries: {attempts: 2}\n"
    diags = [d for d in check(_view(_write(tmp_path, traffic, route))) if d.code == "W603"]
    assert len(diags) == 1, [d.render() for d in diags]
    assert "version v2's connection pool" in diags[0].message and "max_requests 2" in diags[0].message
    assert diags[0].refs[0].anchor == "TrafficPolicy/reviews/versions/v2/connection_pool/max_requests"


def test_diff_shows_a_version_change_under_its_version():
    pair = ROOT / "tests" / "diff" / "per-version-pool"
    changes = diff_protections(_view(pair / "old"), _view(pair / "new"))
    assert [(c.item, c.kind) for c in changes] == [
        ("versions.v1", "added"),
        ("versions.v2.connection_pool.max_connections", "changed"),
        ("versions.v2.connection_pool.max_pending_requests", "changed"),
    ]


def test_an_external_service_takes_settings_for_its_one_version_default(tmp_path):
    import shutil

    shutil.copytree(ROOT / "policies" / "egress", tmp_path / "p")
    routes = tmp_path / "p" / "routes.yaml"
    routes.write_text(
        routes.read_text().replace(
            "service: geo\n", "service: geo\nversions:\n  default:\n    connection_pool: {max_connections: 3}\n"
        )
    )
    view = _view(tmp_path / "p")
    assert view.externals["geo"].protections["default"].connection_pool.max_connections == 3
    clusters = [c for s in lower(view).sidecars for c in s.clusters if c.service == "geo"]
    assert clusters and {c.protection.max_connections for c in clusters} == {3}
