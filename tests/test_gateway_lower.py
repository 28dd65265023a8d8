"""Gateway lowering and emit: what the IR and the Envoy resources of an ingress gateway must say.

No Envoy runs here (tests/test_live_gateway.py drives the real one); these pin the facts the live tests
rely on: which virtual host a request lands on and in what order its routes are tried, that a gateway path
prefix narrows the destination's own routes without breaking them, that the gateway reaches the mesh with
the very clusters (and Route rules) mesh callers use and its own identity, the redirect, and the edge
settings Envoy recommends for untrusted clients.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.build import check_policies
from compiler.emit import emit
from compiler.emit.http_filters import http_filters
from compiler.ir import HeaderCondition, HttpListener, PathCondition
from compiler.lower import VERSION_HEADER, LowerOptions, lower
from compiler.lower.gateway import covers, serves
from compiler.policy import (
    AuthorizationPolicy,
    Gateway,
    GatewayListener,
    GatewayRoute,
    Mesh,
    PolicySet,
    Route,
    RouteRule,
    Service,
)

ROOT = Path(__file__).resolve().parent.parent


def _ir(*docs, **options):
    return lower(PolicySet(tuple(docs)), LowerOptions(**options))


def _sidecar(ir, name):
    return next(s for s in ir.sidecars if s.service == name)


def _edge(sidecar, name) -> HttpListener:
    return next(l for l in sidecar.listeners if l.edge is not None and l.edge.listener == name)


@pytest.fixture(scope="module")
def golden():
    diags, view = check_policies(ROOT / "policies" / "gateway")
    assert view is not None, [d.render() if hasattr(d, "render") else str(d) for d in diags]
    ir = lower(view, LowerOptions(certs_root="/certs"))
    return ir, emit(ir)


def _config(mesh, name):
    return next(s for s in mesh.sidecars if s.service == name)


def _https(cert_dir="/etc/edge"):
    return GatewayListener(
        name="https",
        port=8443,
        protocol="https",
        tls={
            "certificates": [{"hosts": ["a.example.com"], "cert": f"{cert_dir}/tls.crt", "key": f"{cert_dir}/tls.key"}]
        },
    )


# -- which virtual host, which routes ------------------------------------------------------------


def test_host_coverage():
    assert covers("a.example.com", "a.example.com")
    assert covers("*.example.com", "a.example.com")
    assert covers("*.example.com", "*.a.example.com"), "a narrower wildcard lies under a wider one"
    assert not covers("*.example.com", "example.com"), "Envoy's *.example.com needs a label before the dot"
    assert not covers("a.example.com", "*.example.com")
    assert serves(GatewayRoute(to="x"), "anything.example.org"), "no hosts: any host"
    assert not serves(GatewayRoute(hosts=["b.example.com"], to="x"), "a.example.com")


def test_each_host_gets_every_covering_route_in_gateway_order_and_any_host_routes_go_to_star():
    ir = _ir(
        Mesh(name="m"),
        Service(name="web", port=8080, app_port=18080, sidecar={"address": "127.0.30.1"}),
        Service(name="api", port=8080, app_port=18081, sidecar={"address": "127.0.30.2"}),
        Service(name="docs", port=8080, app_port=18082, sidecar={"address": "127.0.30.3"}),
        Gateway(
            name="gw",
            address="127.0.30.9",
            listeners=[GatewayListener(name="http", port=8080)],
            routes=[
                GatewayRoute(hosts=["*.example.com"], path="/api", to="api"),
                GatewayRoute(hosts=["a.example.com"], to="web"),
                GatewayRoute(to="docs"),
            ],
        ),
    )
    table = _edge(_sidecar(ir, "gw"), "http").routes
    assert table.name == "edge-http"
    by_host = {v.name: v for v in table.virtual_hosts}
    assert [v.domains for v in table.virtual_hosts] == [("*.example.com",), ("a.example.com",), ("*",)]
    target = lambda r: r.targets[0].cluster.service  # noqa: E731
    assert [target(r) for r in by_host["a.example.com"].routes] == ["api", "web", "docs"], (
        "a.example.com is covered by *.example.com: its /api route comes first, as in the gateway"
    )
    assert [target(r) for r in by_host["*.example.com"].routes] == ["api", "docs"]
    assert [target(r) for r in by_host["*"].routes] == ["docs"], "only routes without hosts serve any host"
    api_route = by_host["*.example.com"].routes[0]
    assert api_route.path == PathCondition("prefix", "/api"), "the destination's `/` takes the gateway's prefix"


def test_gateway_path_narrows_the_destinations_routes_without_mutating_them():
    docs = (
        Mesh(name="m"),
        Service(name="front", port=8080, app_port=18080, sidecar={"address": "127.0.31.1"}, calls=["shop"]),
        Service(name="shop", port=8080, app_port=18081, sidecar={"address": "127.0.31.2"}),
        Route(
            service="shop",
            rules=[
                RouteRule(match={"path": {"prefix": "/shop/cart"}}, to={"default": 100}),
                RouteRule(match={"path": {"prefix": "/other"}}, to={"default": 100}),
                RouteRule(match={"path": {"regex": "/shop/item/[0-9]+"}}, to={"default": 100}),
                RouteRule(match={"path": {"prefix": "/"}, "headers": [{"name": "x-old", "present": True}]},
                          redirect={"prefix": "/new/"}),
                RouteRule(match={"path": {"prefix": "/"}}, rewrite={"prefix": "/v2/"}, to={"default": 100}),
            ],
        ),
        Gateway(
            name="gw",
            address="127.0.31.9",
            listeners=[GatewayListener(name="http", port=8080)],
            routes=[GatewayRoute(path="/shop", to="shop")],
        ),
    )
    ir = _ir(*docs)
    mesh_routes = _sidecar(ir, "front").listeners[-1].routes.virtual_hosts[0].routes
    edge_routes = _edge(_sidecar(ir, "gw"), "http").routes.virtual_hosts[0].routes
    assert len(edge_routes) == 4, "/other can never match under /shop: dropped"
    cart, regex, redirect, rewrite = edge_routes
    assert cart is mesh_routes[0], "a route already under /shop is the shared node itself"
    assert regex.path == PathCondition("regex", "/shop/item/[0-9]+")
    assert regex.headers[0] == HeaderCondition(":path", "prefix", "/shop")
    assert redirect.path == PathCondition("prefix", "/"), "a redirect's prefix replaces what its route matched"
    assert redirect.headers[0] == HeaderCondition(":path", "prefix", "/shop")
    assert rewrite.path == PathCondition("prefix", "/"), "a prefix rewrite replaces exactly what its route matched"
    assert rewrite.headers[0] == HeaderCondition(":path", "prefix", "/shop")
    assert all(not any(h.name == ":path" for h in r.headers) for r in mesh_routes), "shared nodes untouched"


# -- into the mesh --------------------------------------------------------------------------------


def test_gateway_uses_the_mesh_callers_clusters_and_route_rules(golden):
    ir, _ = golden
    gw, pp_callers = _sidecar(ir, "ingress"), _sidecar(ir, "productpage")
    assert [s.service for s in ir.sidecars] == sorted(s.service for s in ir.sidecars), "gateways sorted with services"
    by_host = {v.name: v for v in _edge(gw, "https").routes.virtual_hosts}
    jason, split = by_host["bookinfo.example.com"].routes
    assert jason.headers == (HeaderCondition("end-user", "exact", "jason"),)
    assert [(t.cluster.version, t.weight) for t in jason.targets] == [("v2", 100)]
    assert [(t.cluster.version, t.weight, t.set_headers) for t in split.targets] == [
        ("v1", 90, ((VERSION_HEADER, "v1"),)),
        ("v2", 10, ((VERSION_HEADER, "v2"),)),
    ], "the version marker the callee's inbound side delivers by"
    reviews_via_gateway = by_host["api.example.com"].routes[0].targets[0].cluster
    reviews_via_productpage = next(c for c in pp_callers.clusters if c.id == "outbound/reviews/default")
    assert reviews_via_gateway is reviews_via_productpage, "one Cluster object for every caller"
    assert {c.id for c in gw.clusters} == {
        "outbound/productpage/v1",
        "outbound/productpage/v2",
        "outbound/reviews/default",
        "outbound/zipkin/default",
    }


def test_gateway_originates_mtls_with_its_own_identity_and_authorization_names_it(golden):
    ir, mesh = golden
    gw = _sidecar(ir, "ingress")
    assert gw.tls.identity == "spiffe://bookinfo.example/ns/edge/sa/ingress"
    assert gw.tls.certs_dir == "/certs/ingress"
    pp = _sidecar(ir, "productpage")
    inbound = next(l for l in pp.listeners if l.direction == "inbound")
    assert inbound.access.allow[0].principals == ("spiffe://bookinfo.example/ns/edge/sa/ingress",)
    cluster = next(c for c in _config(mesh, "ingress").clusters if c["name"] == "outbound|productpage|v1")
    context = cluster["transport_socket"]["typed_config"]
    assert context["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"] == "identity"
    assert context["common_tls_context"]["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"
    ][0]["matcher"] == {"exact": "spiffe://bookinfo.example/ns/default/sa/productpage"}
    assert cluster["per_connection_buffer_limit_bytes"] == 32768, "Envoy's edge advice, upstream too"
    mesh_caller = next(c for c in _config(mesh, "productpage").clusters if c["name"] == "outbound|reviews|default")
    assert "per_connection_buffer_limit_bytes" not in mesh_caller, "only as the gateway sees the shared cluster"


def test_gateway_without_mtls_in_the_mesh_holds_no_certificates():
    ir = _ir(
        Mesh(name="m", mtls={"mode": "disable"}),
        Service(name="web", port=8080, app_port=18080, sidecar={"address": "127.0.32.1"}),
        Gateway(name="gw", address="127.0.32.9", listeners=[GatewayListener(name="http", port=8080)],
                routes=[GatewayRoute(to="web")]),
    )
    gw = _sidecar(ir, "gw")
    assert gw.tls is None and gw.clusters[0].upstream_tls is None
    assert "transport_socket" not in _config(emit(ir), "gw").clusters[0]


# -- the redirect ------------------------------------------------------------------------------------


def test_http_listener_redirects_everything_to_the_https_port(golden):
    ir, mesh = golden
    http = _edge(_sidecar(ir, "ingress"), "http")
    (vhost,) = http.routes.virtual_hosts
    (route,) = vhost.routes
    assert vhost.domains == ("*",)
    assert (route.redirect.scheme, route.redirect.port, route.redirect.code) == ("https", 8443, 301)
    assert http.edge.https_redirect_port == 8443
    assert http.jwt is None, "a redirect needs no token"
    names = [f["name"] for f in http_filters(http)]
    assert "envoy.filters.http.buffer" not in names and "envoy.filters.http.jwt_authn" not in names
    rc = next(r for r in _config(mesh, "ingress").route_configs if r["name"] == "edge-http")
    assert rc["virtual_hosts"][0]["routes"][0]["redirect"] == {
        "scheme_redirect": "https",
        "port_redirect": 8443,
        "response_code": "MOVED_PERMANENTLY",
    }


# -- edge settings -------------------------------------------------------------------------------


def _hcm(listener: dict, chain: dict | None = None) -> dict:
    chain = chain or listener["filter_chains"][0]
    return next(f for f in chain["filters"] if f["name"] == "envoy.filters.network.http_connection_manager")[
        "typed_config"
    ]


def test_edge_connection_manager_follows_envoys_edge_advice(golden):
    _, mesh = golden
    config = _config(mesh, "ingress")
    https = next(l for l in config.listeners if l["name"] == "edge|https")
    hcm = _hcm(https)
    assert hcm["stat_prefix"] == "edge_https"
    assert hcm["use_remote_address"] is True and hcm["xff_num_trusted_hops"] == 1
    assert hcm["generate_request_id"] is True and hcm["preserve_external_request_id"] is False
    assert hcm["server_header_transformation"] == "OVERWRITE" and hcm["server_name"] == "gateway"
    assert hcm["strip_any_host_port"] is True
    assert hcm["common_http_protocol_options"] == {
        "idle_timeout": "300s",
        "max_headers_count": 64,
        "headers_with_underscores_action": "REJECT_REQUEST",
    }
    assert hcm["max_request_headers_kb"] == 32
    assert (hcm["request_headers_timeout"], hcm["request_timeout"], hcm["stream_idle_timeout"]) == ("5s", "30s", "60s")
    assert hcm["http2_protocol_options"] == {
        "max_concurrent_streams": 100,
        "initial_stream_window_size": 65536,
        "initial_connection_window_size": 1048576,
    }
    removed = {m["remove"] for m in hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]}
    assert {"x-b3-traceid", "traceparent", "b3"} <= removed, "the gateway's span is the root of every trace"
    assert https["per_connection_buffer_limit_bytes"] == 32768
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.buffer",
        "envoy.filters.http.router",
    ], "tokens and rate limits refuse before the body is buffered"
    buffer = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.buffer")
    assert buffer["typed_config"]["max_request_bytes"] == 1048576
    assert config.bootstrap.runtime == {
        "envoy.resource_limits.listener.edge|http.connection_limit": 5000,
        "envoy.resource_limits.listener.edge|https.connection_limit": 5000,
    }
    assert config.bootstrap.node_id == "gateway~ingress.bookinfo"
    pp = _config(mesh, "productpage")
    assert pp.bootstrap.runtime is None, "sidecars keep their bootstrap as it was"
    assert "use_remote_address" not in _hcm(pp.listeners[0])


def test_https_listener_picks_the_certificate_by_sni_from_files(golden):
    _, mesh = golden
    config = _config(mesh, "ingress")
    https = next(l for l in config.listeners if l["name"] == "edge|https")
    assert [f["name"] for f in https["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    chains = https["filter_chains"]
    assert [c["filter_chain_match"]["server_names"] for c in chains] == [
        ["bookinfo.example.com"],
        ["api.example.com", "*.api.example.com"],
    ]
    default = https["default_filter_chain"]
    first = chains[0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert default["transport_socket"]["typed_config"]["common_tls_context"] == first, "no/unknown SNI: first cert"
    assert first["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    assert first["alpn_protocols"] == ["h2", "http/1.1"]
    assert first["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"] == (
        "/etc/meshc/sds-edge-https-1.yaml"
    )
    assert "require_client_certificate" not in chains[0]["transport_socket"]["typed_config"]
    secrets = {s["name"]: s for s in config.secrets}
    assert secrets["edge-https-2"]["tls_certificate"] == {
        "certificate_chain": {"filename": "/etc/meshc/edge/api/tls.crt"},
        "private_key": {"filename": "/etc/meshc/edge/api/tls.key"},
        "watched_directory": {"path": "/etc/meshc/edge/api"},
    }, "file names only: no key material in the output"
    assert {"identity", "trust", "edge-https-1", "edge-https-2"} == set(secrets)


def test_client_ca_requires_a_client_certificate_and_static_mode_inlines_the_secrets():
    listener = _https().model_copy(
        update={"tls": _https().tls.model_copy(update={"client_ca": "/etc/clients/ca.pem", "min_version": "1.3"})}
    )
    ir = _ir(
        Mesh(name="m", mtls={"mode": "disable"}),
        Service(name="web", port=8080, app_port=18080, sidecar={"address": "127.0.33.1"}),
        Gateway(name="gw", address="127.0.33.9", listeners=[listener], routes=[GatewayRoute(to="web")]),
    )
    gw = _sidecar(ir, "gw")
    assert gw.gateway.files == ("/etc/clients/ca.pem", "/etc/edge/tls.crt", "/etc/edge/tls.key")
    config = _config(emit(ir), "gw")
    chain = config.listeners[0]["filter_chains"][0]
    context = chain["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    assert context["common_tls_context"]["validation_context_sds_secret_config"]["name"] == "edge-https-client-ca"
    assert context["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    ca = next(s for s in config.secrets if s["name"] == "edge-https-client-ca")
    assert ca["validation_context"] == {
        "trusted_ca": {"filename": "/etc/clients/ca.pem"},
        "watched_directory": {"path": "/etc/clients"},
    }
    static = _config(emit(ir, static=True), "gw")
    assert {s["name"] for s in static.bootstrap.static_secrets} == {"edge-https-1", "edge-https-client-ca"}
    inline = static.bootstrap.listeners[0]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert inline["common_tls_context"]["tls_certificate_sds_secret_configs"] == [{"name": "edge-https-1"}]


def test_gateway_spec_and_placement(golden):
    ir, _ = golden
    gw = _sidecar(ir, "ingress")
    spec = gw.gateway
    assert (spec.name, spec.namespace, spec.replicas) == ("ingress", "edge", 2)
    assert [(p.name, p.port, p.protocol) for p in spec.listeners] == [("http", 8080, "http"), ("https", 8443, "https")]
    assert spec.files == (
        "/etc/meshc/edge/api/tls.crt",
        "/etc/meshc/edge/api/tls.key",
        "/etc/meshc/edge/bookinfo/tls.crt",
        "/etc/meshc/edge/bookinfo/tls.key",
    )
    assert [(l.direction, l.address, l.port) for l in gw.listeners] == [
        ("edge", "127.0.21.9", 8080),
        ("edge", "127.0.21.9", 8443),
    ]
    assert (gw.admin_address, gw.source_address) == ("127.0.21.9", "127.0.21.9")
    assert gw.metrics.address == "127.0.21.9" and gw.tracing.collector.service == "zipkin"
    https = _edge(gw, "https")
    assert https.rate_limit.requests == 200 and https.jwt.providers[0].name == "bookinfo-issuer"
