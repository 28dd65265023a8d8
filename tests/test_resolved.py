"""The resolved view: one meaning per service, read by check and lower alike."""

from __future__ import annotations

from compiler.check import check
from compiler.ir import HttpListener
from compiler.lower import lower
from compiler.policy import Duration, Mesh, PolicySet, Route, Service
from compiler.policy.resolved import ENFORCEABLE, resolve, unretried_methods


def _policy(*extra):
    mesh = Mesh.model_validate({"name": "m", "trust_domain": "t.example", "defaults": {"timeout": "5s"}})
    api = Service(name="api", port=8080, app_port=18080, versions={"v1": {}, "v2": {}}, default_version="v2",
                  service_account="api-sa", mtls="permissive")
    web = Service(name="web", port=8081, app_port=18081, calls=["api", "db"])
    db = Service(name="db", protocol="tcp", port=5432, app_port=15432)
    route = Route.model_validate(
        {"service": "api", "rules": [{"match": {"path": {"prefix": "/slow"}}, "to": {"v1": 100}, "timeout": "30s"},
                                     {"match": {"methods": ["GET"]}, "to": {"v2": 100}, "timeout": "2s"}, {"to": {"v1": 100}}]}
    )
    return PolicySet((mesh, api, web, db, route, *extra))


def test_one_view_holds_the_effective_values():
    view = resolve(_policy())
    api = view["api"]
    assert api.versions == ("v1", "v2") and api.default_version == "v2"
    assert api.identity == "spiffe://t.example/ns/default/sa/api-sa"
    assert (api.mtls, view["web"].mtls) == ("permissive", "disable"), "its own mode, else the mesh's"
    assert [view.timeout_of(r) for r in api.route.rules] == [Duration(30000), Duration(2000), Duration(5000)]
    assert api.inbound_timeout == Duration(30000), "the callee allows the longest caller timeout"
    assert view["web"].inbound_timeout == Duration(5000), "no Route: the mesh default"
    assert (api.placement.inbound_port, str(api.reach)) == (8080, "api.default.svc.cluster.local:8080")
    assert {v: str(e) for v, e in api.version_reach.items()} == {
        "v1": "api-v1.default.svc.cluster.local:8080", "v2": "api-v2.default.svc.cluster.local:8080"
    }
    assert (view["db"].listener, api.listener) == ("tcp", "http")
    assert view["db"].enforces("from") and not view["db"].enforces("paths") and api.enforces("paths")
    assert ENFORCEABLE["tcp"] < ENFORCEABLE["http"]


def test_check_and_lower_read_the_same_view():
    view = resolve(_policy())
    assert resolve(view) is view, "resolving a view again is free: lower() uses the one check() validated"
    assert [d for d in check(view) if d.is_error] == []
    api = next(s for s in lower(view).sidecars if s.service == "api")
    inbound = next(l for l in api.listeners if isinstance(l, HttpListener) and l.direction == "inbound")
    assert {r.timeout for r in inbound.routes.virtual_hosts[0].routes} == {view["api"].inbound_timeout}
    assert lower(view) == lower(view.policy)


def test_without_exactly_one_mesh_only_the_mesh_free_meaning_is_resolved():
    view = resolve(_policy(Mesh(name="second")))
    assert view.mesh is None and view.timeout_of(view.routes["api"].rules[2]) is None
    api = view["api"]
    assert api.default_version == "v2" and api.listener == "http"
    assert (api.placement, api.identity, api.mtls, api.inbound_timeout) == (None, None, None, None)
    assert [d.code for d in check(view) if d.is_error] == ["E202"]


def test_duplicates_keep_a_view_each_and_the_index_keeps_the_last():
    view = resolve(_policy(Service(name="api", protocol="tcp", port=9, app_port=19)))
    assert [v.listener for v in view.all_services if v.name == "api"] == ["http", "tcp"]
    assert view["api"].listener == "tcp" and view.services["api"].port == 9


def test_methods_unsafe_to_retry():
    route = Route.model_validate(
        {"service": "api", "rules": [{"to": {"v1": 100}}, {"match": {"methods": ["GET", "POST", "PATCH"]}, "to": {"v1": 100}},
                                     {"match": {"methods": ["GET"]}, "to": {"v1": 100}}]}
    )
    assert [unretried_methods(r) for r in route.rules] == [["CONNECT", "PATCH", "POST"], ["PATCH", "POST"], []]


def test_versions_that_list_no_endpoints_are_the_app_on_app_port():
    view = resolve(_policy(Service(name="cart", port=8082, app_port=18082, versions={"v1": {"endpoints": ["10.0.0.1:80"]}, "v2": {}})))
    assert view["api"].app_port_versions == ("v1", "v2") and view["web"].app_port_versions == ("default",)
    cart = view["cart"]
    assert cart.app_port_versions == ("v2",)
    assert {v: [str(e) for e in eps] for v, eps in cart.endpoints.items()} == {"v1": ["10.0.0.1:80"], "v2": ["127.0.0.1:18082"]}
    assert [d for d in check(view) if d.is_error] == []


def test_app_port_is_needed_by_a_version_without_endpoints_and_refused_when_none_is():
    mesh = Mesh(name="m")
    needs = Service(name="a", port=1000, versions={"v1": {"endpoints": ["127.0.0.1:2001"]}, "v2": {}, "v3": {}})
    bare = Service(name="b", port=1001)
    unused = Service(name="c", port=1002, app_port=2002, versions={"v1": {"endpoints": ["127.0.0.1:2003"]}})
    diags = [(d.code, d.subject, d.path, d.message) for d in check(PolicySet((mesh, needs, bare, unused)))]
    assert diags == [
        ("E215", "Service 'a'", f"versions.{v}",
         f"app_port is needed: version '{v}' lists no endpoints, so it is the app on 127.0.0.1:<app_port>")
        for v in ("v2", "v3")
    ] + [
        ("E215", "Service 'b'", "",
         "app_port is needed: the service lists no versions, so its one version 'default' is the app on 127.0.0.1:<app_port>"),
        ("E281", "Service 'c'", "app_port", "app_port is not used: every version lists its endpoints; remove it"),
    ]


def test_port_clashes_on_one_host_know_where_an_app_listens():
    mesh = Mesh(name="m")
    # a's v2 is the app on its app_port: a clash with b's endpoint points at that app_port; c has no
    # app_port (E215) and so binds nothing on the host
    a = Service(name="a", port=1000, app_port=2000, sidecar={"address": "127.0.0.2"},
                versions={"v1": {"endpoints": ["127.0.0.1:2001"]}, "v2": {}})
    b = Service(name="b", port=1000, sidecar={"address": "127.0.0.3"}, versions={"v1": {"endpoints": ["127.0.0.1:2000"]}})
    c = Service(name="c", port=1000, sidecar={"address": "127.0.0.4"})
    diags = [(d.code, d.subject, d.path) for d in check(PolicySet((mesh, a, b, c)))]
    assert ("E215", "Service 'c'", "") in diags
    (clash,) = [d for d in check(PolicySet((mesh, b, a))) if d.code == "E213"]
    assert clash.message == (
        "127.0.0.1:2000 is bound twice on this host: by the app 'b' version 'v1' and by the app 'a' version 'v2'"
    )
    assert (clash.subject, clash.source.anchor) == ("Service 'a'", "Service/a/app_port")
    assert [d.code for d in check(PolicySet((mesh, a, b, c))) if d.code == "E213"] == ["E213"]
