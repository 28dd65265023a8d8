"""Lowering: policy -> mesh IR, without Envoy in the way."""

from __future__ import annotations

from pathlib import Path

from compiler.build import check_policies
from compiler.emit import emit
from compiler.ir import HttpListener, TcpListener
from compiler.lower import VERSION_HEADER, LowerOptions, lower
from compiler.policy import Mesh, PolicySet, Route, RouteRule, Service

ROOT = Path(__file__).resolve().parent.parent


def _ir(*docs, **options):
    return lower(PolicySet(tuple(docs)), LowerOptions(**options))


def _sidecar(ir, name):
    return next(s for s in ir.sidecars if s.service == name)


def test_kubernetes_defaults_keep_outbound_and_admin_on_loopback():
    ir = _ir(
        Mesh(name="k8s"),
        Service(name="web", port=8080, app_port=18080, calls=["api", "db"]),
        Service(name="api", port=8080, app_port=18080),
        Service(name="db", protocol="tcp", port=5432, app_port=15432),
    )
    web = _sidecar(ir, "web")
    by_dir = {(l.direction, type(l).__name__): l for l in web.listeners}
    assert by_dir[("inbound", "HttpListener")].address == "0.0.0.0"
    assert by_dir[("outbound", "HttpListener")].address == "127.0.0.1", "outbound must not be an open proxy"
    assert by_dir[("outbound", "TcpListener")].address == "127.0.0.1"
    assert (web.admin_address, web.admin_port) == ("127.0.0.1", 15000)
    # Callers reach each version of a Kubernetes service by its headless Service's name, so the cluster resolves it.
    api = next(c for c in web.clusters if c.id == "outbound/api/default")
    assert [str(e) for e in api.endpoints] == ["api-default.default.svc.cluster.local:8080"]
    cluster = next(c for c in emit(ir).sidecars[2].clusters if c["name"] == "outbound|api|default")
    assert cluster["cluster_type"]["name"] == "envoy.cluster.dns", "a strict DNS cluster: one host per pod"


def test_one_host_sidecars_listen_on_their_own_address():
    diags, policy = check_policies(ROOT / "policies" / "basic")
    assert policy is not None, diags
    ir = lower(policy)
    pp = _sidecar(ir, "productpage")
    assert {(l.direction, l.address, l.port) for l in pp.listeners} == {
        ("inbound", "127.0.0.2", 9080),
        ("outbound", "127.0.0.2", 15001),
    }
    reviews_v1 = next(c for c in pp.clusters if c.id == "outbound/reviews/v1")
    assert [str(e) for e in reviews_v1.endpoints] == ["127.0.0.3:9080"], "callers go through the callee's sidecar"


def test_callers_share_one_virtual_host_and_clusters_per_dependency():
    ir = _ir(
        Mesh(name="m"),
        Service(name="a", port=1001, app_port=2001, calls=["c"]),
        Service(name="b", port=1002, app_port=2002, calls=["c"]),
        Service(name="c", port=1003, app_port=2003, versions={"v1": {}, "v2": {}}),
        Route(service="c", rules=[RouteRule(to={"v1": 70, "v2": 30})]),
    )
    vhost = {s.service: next(l for l in s.listeners if l.direction == "outbound").routes.virtual_hosts[0] for s in ir.sidecars if s.service != "c"}
    assert vhost["a"] is vhost["b"]
    targets = vhost["a"].routes[0].targets
    assert [(t.cluster.version, t.weight, t.set_headers) for t in targets] == [
        ("v1", 70, ((VERSION_HEADER, "v1"),)),
        ("v2", 30, ((VERSION_HEADER, "v2"),)),
    ]


def test_inbound_side_delivers_by_version_marker_and_strips_it():
    ir = _ir(
        Mesh(name="m", defaults={"timeout": "5s"}),
        Service(name="c", port=1003, app_port=2003, versions={"v1": {}, "v2": {"endpoints": ["10.0.0.9:80"]}}, default_version="v2"),
        Route(service="c", rules=[RouteRule(to={"v1": 100}, timeout="30s")]),
    )
    inbound = next(l for l in ir.sidecars[0].listeners if isinstance(l, HttpListener))
    routes = inbound.routes.virtual_hosts[0].routes
    assert [(r.headers[0].value if r.headers else None, r.targets[0].cluster.version) for r in routes] == [
        ("v1", "v1"),
        ("v2", "v2"),
        (None, "v2"),  # no marker (outside the mesh): default_version
    ]
    assert all(r.request_headers.remove == (VERSION_HEADER,) for r in routes)
    assert all(r.timeout.ms == 30_000 for r in routes), "the callee is no stricter than its callers' routes"


def test_tcp_service_gets_tcp_listeners_to_its_default_version():
    ir = _ir(
        Mesh(name="m"),
        Service(name="app", port=1000, app_port=2000, calls=["db"]),
        Service(name="db", protocol="tcp", port=5432, app_port=15432),
    )
    db = _sidecar(ir, "db")
    assert [type(l) for l in db.listeners] == [TcpListener]
    app = _sidecar(ir, "app")
    tcp = [l for l in app.listeners if isinstance(l, TcpListener)]
    assert [(l.port, l.cluster.id) for l in tcp] == [(5432, "outbound/db/default")]
    assert not any(isinstance(l, HttpListener) and l.direction == "outbound" for l in app.listeners)


def test_config_root_points_each_sidecar_at_its_own_folder():
    ir = _ir(Mesh(name="m"), Service(name="a", port=1, app_port=2), config_root="/srv/out/")
    assert ir.sidecars[0].config_dir == "/srv/out/a"
    assert _ir(Mesh(name="m", config_dir="/cfg"), Service(name="a", port=1, app_port=2)).sidecars[0].config_dir == "/cfg"
