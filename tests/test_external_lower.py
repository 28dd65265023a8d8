"""ExternalService and Mesh egress: lowering and emit facts, without Envoy in the way.

Live behaviour (TLS origination, verification, retries, the catch-all) is in
tests/test_live_egress.py; these pin what the output must hold and must not.
"""

from __future__ import annotations

import json
from pathlib import Path

from compiler.build import BuildOptions, build
from compiler.emit import emit
from compiler.ir import HttpListener, TcpListener
from compiler.lower import VERSION_HEADER, lower
from compiler.lower.external import EGRESS_HEADER, REFUSED_BODY, UNDECLARED
from compiler.policy import PolicySet, Route, RouteRule
from compiler.policy.external import ExternalService, ExternalTls
from compiler.policy.models import Mesh, Service

ROOT = Path(__file__).resolve().parent.parent
PAYMENTS = ExternalService(
    name="payments", host="api.payments.example", port=443, tls=ExternalTls(ca="/etc/ext/payments/ca.pem")
)


def _ir(*docs):
    return lower(PolicySet(tuple(docs)))


def _sidecar(ir, name):
    return next(s for s in ir.sidecars if s.service == name)


def _emitted(ir, name, static=False):
    return next(s for s in emit(ir, static=static).sidecars if s.service == name)


def _mesh(**fields):
    return Mesh(name="m", sidecar={"address": "127.0.0.5"}, **fields)


def _outbound(sidecar) -> HttpListener:
    return next(l for l in sidecar.listeners if isinstance(l, HttpListener) and l.direction == "outbound")


def test_an_external_is_one_cluster_with_its_own_tls_and_never_the_mesh_certificate():
    ir = _ir(
        _mesh(mtls={"mode": "strict"}),
        Service(name="shop", port=8080, app_port=18080, calls=["payments"]),
        PAYMENTS,
    )
    c = next(c for c in _sidecar(ir, "shop").clusters if c.id == "outbound/payments/default")
    assert c.external and c.upstream_tls is None
    assert (c.external_tls.sni, c.external_tls.ca_file, c.external_tls.min_version) == (
        "api.payments.example", "/etc/ext/payments/ca.pem", "1.2",
    )
    assert c.dns.logical and [str(e) for e in c.endpoints] == ["api.payments.example:443"]

    out = _emitted(ir, "shop")
    cluster = next(x for x in out.clusters if x["name"] == "outbound|payments|default")
    assert cluster["cluster_type"]["typed_config"]["all_addresses_in_single_endpoint"] is True
    assert "upstream_bind_config" not in cluster, "a loopback source address cannot reach a host outside"
    ctx = cluster["transport_socket"]["typed_config"]
    assert ctx["sni"] == "api.payments.example"
    common = ctx["common_tls_context"]
    assert "tls_certificate_sds_secret_configs" not in common, "the mesh certificate must not leave the mesh"
    validation = common["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "api.payments.example"}}
    ]
    assert validation["validation_context_sds_secret_config"]["name"] == "external-ca-payments"
    secret = next(s for s in out.secrets if s["name"] == "external-ca-payments")
    assert secret["validation_context"] == {
        "trusted_ca": {"filename": "/etc/ext/payments/ca.pem"},
        "watched_directory": {"path": "/etc/ext/payments"},
    }
    # The mesh's own secrets are still there for mesh traffic.
    assert {s["name"] for s in out.secrets} == {"identity", "trust", "external-ca-payments"}


def test_fixed_addresses_are_static_fixed_names_strict_dns_and_grpc_negotiates_h2():
    ir = _ir(
        _mesh(),
        Service(name="shop", port=8080, app_port=18080, calls=["a", "b"]),
        ExternalService(name="a", host="a.example", port=8443, endpoints=["192.0.2.1:8443", "192.0.2.2:8443"]),
        ExternalService(
            name="b", host="b.example", port=443, protocol="grpc", endpoints=["b1.example:443", "b2.example:443"],
            tls=ExternalTls(ca="/ca/b.pem", sni="grpc.b.example", min_version="1.3"),
        ),
    )
    clusters = {c["name"]: c for c in _emitted(ir, "shop").clusters}
    assert clusters["outbound|a|default"]["type"] == "STATIC"
    assert "transport_socket" not in clusters["outbound|a|default"]
    b = clusters["outbound|b|default"]
    assert b["cluster_type"]["name"] == "envoy.cluster.dns"
    assert "all_addresses_in_single_endpoint" not in b["cluster_type"]["typed_config"], "each address is a host"
    ctx = b["transport_socket"]["typed_config"]
    assert ctx["sni"] == "grpc.b.example"
    assert ctx["common_tls_context"]["alpn_protocols"] == ["h2"]
    assert ctx["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    assert "typed_extension_protocol_options" in b  # HTTP/2 upstream


def test_virtual_host_domains_host_rewrite_and_no_version_marker():
    ir = _ir(
        _mesh(),
        Service(name="shop", port=8080, app_port=18080, calls=["payments", "plain"]),
        PAYMENTS,
        ExternalService(name="plain", host="plain.example", port=8080),
        Route(service="plain", rules=[RouteRule(match={"path": {"prefix": "/x"}}, to={"default": 100},
                                                rewrite={"host": "other.example"}), RouteRule(to={"default": 100})]),
    )
    vhosts = {v.name: v for v in _outbound(_sidecar(ir, "shop")).routes.virtual_hosts}
    assert vhosts["payments"].domains == ("api.payments.example", "api.payments.example:443", "payments", "payments:443")
    # 443 with TLS is the scheme's default port: Host is the bare name; elsewhere Host carries the port.
    assert [r.rewrite.host for r in vhosts["payments"].routes] == ["api.payments.example"]
    assert [r.rewrite.host for r in vhosts["plain"].routes] == ["other.example", "plain.example:8080"]
    for vhost in (vhosts["payments"], vhosts["plain"]):
        for r in vhost.routes:
            assert all(VERSION_HEADER not in dict(t.set_headers) for t in r.targets)


def test_a_mirror_to_an_external_carries_no_version_marker():
    ir = _ir(
        _mesh(),
        Service(name="shop", port=8080, app_port=18080, calls=["api"]),
        Service(name="api", port=8081, app_port=18081),
        ExternalService(name="audit", host="audit.example", port=80),
        Route(service="api", rules=[RouteRule(to={"default": 100}, mirror=[{"service": "audit", "to": "default", "percent": 10}])]),
    )
    route = next(v for v in _outbound(_sidecar(ir, "shop")).routes.virtual_hosts if v.name == "api").routes[0]
    assert route.mirrors[0].cluster.external and route.mirrors[0].set_headers == ()
    assert dict(route.targets[0].set_headers) == {VERSION_HEADER: "default"}  # mesh targets keep theirs


def test_a_tcp_external_gets_an_outbound_listener_on_its_port():
    ir = _ir(
        _mesh(),
        Service(name="shop", port=8080, app_port=18080, calls=["db"]),
        ExternalService(name="db", host="db.example", port=5432, protocol="tcp"),
    )
    shop = _sidecar(ir, "shop")
    tcp = next(l for l in shop.listeners if isinstance(l, TcpListener) and l.direction == "outbound")
    assert (tcp.address, tcp.port, tcp.cluster.id) == ("127.0.0.5", 5432, "outbound/db/default")
    # Only tcp dependencies and `refuse`: no HTTP outbound listener to refuse anything on.
    assert not [l for l in shop.listeners if isinstance(l, HttpListener) and l.direction == "outbound"]


def test_refuse_ends_every_outbound_table_with_a_502_and_allow_forwards_from_every_sidecar():
    docs = (
        Service(name="shop", port=8080, app_port=18080, calls=["api"]),
        Service(name="api", port=8081, app_port=18081),
    )
    refuse = _ir(_mesh(), *docs)
    table = _outbound(_sidecar(refuse, "shop")).routes
    last = table.virtual_hosts[-1]
    assert (last.name, last.domains) == (UNDECLARED, ("*",))
    assert (last.routes[0].respond.status, last.routes[0].respond.body) == (502, REFUSED_BODY)
    assert last.routes[0].response_headers.set == ((EGRESS_HEADER, "refused"),)
    assert not [l for l in _sidecar(refuse, "api").listeners if l.direction == "outbound"]
    shop = _emitted(refuse, "shop")
    assert all(f["name"] != "envoy.filters.http.dynamic_forward_proxy"
               for l in shop.listeners for f in _http_filters(l))

    allow = _ir(_mesh(egress={"undeclared": "allow"}), *docs)
    api = _sidecar(allow, "api")  # calls nothing, still gets an outbound listener
    last = _outbound(api).routes.virtual_hosts[-1]
    assert last.domains == ("*",) and last.routes[0].targets[0].cluster.forward_proxy
    out = _emitted(allow, "api")
    outbound = next(l for l in out.listeners if l["name"] == "outbound")
    names = [f["name"] for f in _http_filters(outbound)]
    assert names[-2:] == ["envoy.filters.http.dynamic_forward_proxy", "envoy.filters.http.router"]
    cluster = next(c for c in out.clusters if c["name"] == f"outbound|{UNDECLARED}|any")
    assert cluster["lb_policy"] == "CLUSTER_PROVIDED" and "load_assignment" not in cluster
    cache = cluster["cluster_type"]["typed_config"]["dns_cache_config"]
    assert cache == _http_filters(outbound)[-2]["typed_config"]["dns_cache_config"], "filter and cluster share one cache"


def _http_filters(listener: dict) -> list[dict]:
    for chain in listener.get("filter_chains", []):
        for f in chain["filters"]:
            if f["name"] == "envoy.filters.network.http_connection_manager":
                return f["typed_config"]["http_filters"]
    return []


def test_egress_case_builds_without_material_and_static_mode_inlines_the_secrets(tmp_path):
    result = build(ROOT / "policies" / "egress")
    assert result.ok, result.diagnostics
    assert "checkout/sds-external-ca-payments.yaml" in result.files
    assert "checkout/sds-external-ca-geo.yaml" in result.files
    assert not any(b"BEGIN " in data for data in result.files.values()), "no certificate material in the output"
    static = build(ROOT / "policies" / "egress", BuildOptions(static=True))
    assert static.ok
    assert b"external-ca-payments" in static.files["checkout/bootstrap.yaml"]
    assert json.dumps(sorted(static.files)).count("sds-") == 0
