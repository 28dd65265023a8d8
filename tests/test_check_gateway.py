"""Checks for gateways and services outside the mesh (compiler/check/gateway.py, external.py, and their
place in references, routes, traffic, security, ports and shadowing): each code at the field it is about,
and no word about policies that are fine (the golden cases, and the near misses next to each mistake)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.check import check
from compiler.load import load
from compiler.lower import lower
from compiler.policy import (
    AuthorizationPolicy,
    ExternalService,
    Gateway,
    Mesh,
    PolicySet,
    RequestAuthentication,
    Route,
    Service,
    TrafficPolicy,
)

ROOT = Path(__file__).resolve().parent.parent
JWKS = '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
CERT = {"cert": "/etc/edge/c.pem", "key": "/etc/edge/k.pem"}


def _mesh(**kw) -> list:
    return [
        Mesh(name="m", mtls={"mode": "strict"}, **kw),
        Service(name="web", port=9080, app_port=19080, sidecar={"address": "127.0.70.1"}),
        Service(name="api", port=9080, app_port=19081, sidecar={"address": "127.0.70.2"}),
    ]


def _gateway(**kw) -> Gateway:
    kw.setdefault("name", "edge")
    kw.setdefault("address", "127.0.70.9")
    kw.setdefault("listeners", [{"name": "web", "port": 8080}])
    return Gateway(**kw)


def _codes(*docs) -> list[tuple[str, str]]:
    return [(d.code, d.path) for d in check(PolicySet(tuple(docs)))]


def _only(code: str, *docs) -> list[str]:
    return [d.path for d in check(PolicySet(tuple(docs))) if d.code == code]


@pytest.mark.parametrize("case", ["gateway", "egress", "kubernetes"])
def test_the_golden_cases_are_clean(case):
    result = load(ROOT / "policies" / case)
    diags = check(result.policy if hasattr(result, "policy") else result)
    assert [d.render() for d in diags] == []


# -- listeners ------------------------------------------------------------------


def test_redirect_needs_an_https_listener_to_go_to():
    gw = _gateway(listeners=[{"name": "plain", "port": 8080, "redirect_to_https": True}], routes=[{"to": "web"}])
    assert ("E505", "listeners[0].redirect_to_https") in _codes(*_mesh(), gw)
    ok = _gateway(
        listeners=[
            {"name": "plain", "port": 8080, "redirect_to_https": True},
            {"name": "tls", "port": 8443, "protocol": "https",
             "tls": {"certificates": [{"hosts": ["a.example.com"], **CERT}]}},
        ],
        routes=[{"to": "web"}],
    )
    assert _codes(*_mesh(), ok) == []


def test_one_sni_name_on_two_certificates_but_a_wildcard_beside_a_name_is_fine():
    def gw(second):
        return _gateway(
            listeners=[{"name": "tls", "port": 8443, "protocol": "https", "tls": {"certificates": [
                {"hosts": ["a.example.com"], **CERT}, {"hosts": second, **CERT}]}}],
            routes=[{"to": "web"}],
        )

    assert _only("E506", *_mesh(), gw(["b.example.com", "a.example.com"])) == ["listeners[0].tls.certificates[1].hosts[1]"]
    assert _codes(*_mesh(), gw(["*.example.com"])) == []


def test_route_hosts_and_the_certificates_of_its_https_listener():
    def gw(hosts):
        return _gateway(
            listeners=[{"name": "tls", "port": 8443, "protocol": "https", "tls": {"certificates": [
                {"hosts": ["shop.example.com", "*.api.example.com"], **CERT}]}}],
            routes=[{"hosts": hosts, "to": "web"}],
        )

    assert _codes(*_mesh(), gw(["shop.example.com", "v1.api.example.com", "*.eu.api.example.com"])) == []
    assert _codes(*_mesh(), gw([])) == []  # any host: the client's SNI decides
    assert _only("W513", *_mesh(), gw(["api.example.com", "shop.example.org"])) == ["routes[0].hosts[0]", "routes[0].hosts[1]"]


def test_a_listener_without_routes_is_a_warning():
    gw = _gateway(listeners=[{"name": "a", "port": 8080}, {"name": "b", "port": 8081}], routes=[{"to": "web", "listeners": ["a"]}])
    assert _codes(*_mesh(), gw) == [("W518", "listeners[1]")]


# -- routes ---------------------------------------------------------------------


def test_routes_name_mesh_http_services_and_listeners_that_route():
    docs = _mesh() + [
        Service(name="db", protocol="tcp", port=5432, app_port=15432, sidecar={"address": "127.0.70.3"}),
        ExternalService(name="ext", host="ext.example", port=80),
        Service(name="caller", port=9080, app_port=19089, sidecar={"address": "127.0.70.4"}, calls=["ext"]),
        _gateway(routes=[
            {"to": "wbe"}, {"path": "/db", "to": "db"}, {"path": "/ext", "to": "ext"},
            {"path": "/x", "to": "web", "listeners": ["nope"]},
        ]),
    ]
    assert _codes(*docs) == [
        ("E507", "routes[0].to"), ("E508", "routes[1].to"), ("E508", "routes[2].to"), ("E509", "routes[3].listeners[0]"),
    ]
    assert "did you mean 'web'" in next(d.message for d in check(PolicySet(tuple(docs))) if d.code == "E507")


def _shadow(*routes, web_route=None, listeners=None):
    docs = _mesh() + [_gateway(listeners=listeners or [{"name": "web", "port": 8080}], routes=list(routes))]
    if web_route is not None:
        docs.append(Route(service="web", rules=web_route))
    return [(d.code, d.path) for d in check(PolicySet(tuple(docs))) if d.code in ("E511", "W512")]


def test_a_route_after_one_that_covers_its_hosts_and_path_never_matches():
    assert _shadow({"to": "web"}, {"path": "/api", "to": "api"}) == [("E511", "routes[1]")]
    assert _shadow({"hosts": ["*.example.com"], "to": "web"}, {"hosts": ["a.example.com", "*.b.example.com"], "path": "/x", "to": "api"}) == [
        ("E511", "routes[1]")
    ]
    assert _shadow({"path": "/api", "to": "web"}, {"path": "/apis", "to": "api"}) == [("E511", "routes[1]")]  # a string prefix


def test_no_shadowing_when_the_earlier_route_does_not_cover():
    assert _shadow({"path": "/api", "to": "api"}, {"to": "web"}) == []  # narrower path first
    assert _shadow({"hosts": ["a.example.com"], "to": "web"}, {"to": "api"}) == []  # the later one serves any host
    assert _shadow({"hosts": ["*.example.com"], "to": "web"}, {"hosts": ["example.com"], "to": "api"}) == []
    # a destination whose Route matches only some requests lets the rest through to the later routes
    assert _shadow({"to": "web"}, {"path": "/api", "to": "api"}, web_route=[{"match": {"path": {"prefix": "/w"}}, "to": {"default": 100}}]) == []
    # ... unless one of its rules matches everything
    assert _shadow(
        {"to": "web"}, {"path": "/api", "to": "api"},
        web_route=[{"match": {"path": {"prefix": "/w"}}, "to": {"default": 100}}, {"to": {"default": 100}}],
    ) == [("E511", "routes[1]")]


def test_shadowed_on_some_of_its_listeners_only_is_a_warning():
    two = [{"name": "a", "port": 8080}, {"name": "b", "port": 8081}]
    assert _shadow({"to": "web", "listeners": ["a"]}, {"path": "/api", "to": "api"}, listeners=two) == [("W512", "routes[1]")]
    assert _shadow({"to": "web", "listeners": ["a"]}, {"path": "/api", "to": "api", "listeners": ["b"]}, listeners=two) == []


def test_the_shadowed_route_is_unreachable_in_what_the_gateway_lowers_to():
    """E511 agrees with the lowering: in every virtual host, a route matching every path comes first."""
    docs = _mesh() + [_gateway(routes=[{"hosts": ["*.example.com"], "to": "web"}, {"hosts": ["a.example.com"], "path": "/api", "to": "api"}])]
    policy = PolicySet(tuple(docs))
    assert [d.code for d in check(policy)] == ["E511"]
    edge = next(s for s in lower(policy).sidecars if s.service == "edge")
    for vhost in edge.listeners[0].routes.virtual_hosts:
        first = vhost.routes[0]
        assert (first.path.kind, first.path.value, first.headers) == ("prefix", "/", ())
        assert first.targets[0].cluster.service == "web"


def test_a_route_to_a_service_that_refuses_the_gateway_is_a_warning():
    def codes(*extra, **mesh):
        return _only("W519", *_mesh(**mesh), _gateway(routes=[{"to": "web"}]), *extra)

    assert codes(AuthorizationPolicy(service="web", allow=[{"from": ["api"]}])) == ["routes[0].to"]
    assert codes(AuthorizationPolicy(service="web", deny=[{"from": ["edge"]}])) == ["routes[0].to"]
    assert codes(authorization={"default": "deny"}) == ["routes[0].to"]
    assert codes(AuthorizationPolicy(service="web", allow=[{"from": ["api", "edge"]}])) == []
    assert codes(AuthorizationPolicy(service="web", allow=[{"paths": [{"prefix": "/"}]}])) == []
    assert codes(AuthorizationPolicy(service="web", mode="dry_run", allow=[{"from": ["api"]}])) == []


# -- names, identities, policies ------------------------------------------------


def test_from_and_request_authentication_name_a_gateway():
    docs = _mesh() + [
        _gateway(routes=[{"to": "web"}]),
        AuthorizationPolicy(service="web", allow=[{"from": ["edge"]}]),
        RequestAuthentication(
            service="edge", providers=[{"name": "p", "issuer": "i", "jwks": JWKS}], rules=[{"providers": ["q"]}]
        ),
    ]
    assert _codes(*docs) == [("E250", "rules[0].providers[0]")]  # the same checks as for a service


def test_from_a_gateway_on_a_service_without_mtls():
    docs = _mesh() + [
        Service(name="old", port=9080, app_port=19082, sidecar={"address": "127.0.70.5"}, mtls="disable"),
        _gateway(routes=[{"to": "old"}]),
        AuthorizationPolicy(service="old", allow=[{"from": ["edge"]}]),
    ]
    assert _codes(*docs) == [("E242", "allow[0].from")]


def test_names_shared_between_kinds():
    docs = _mesh() + [
        _gateway(name="api", routes=[{"to": "web"}]),
        ExternalService(name="web", host="web.example", port=80),
    ]
    codes = [c for c, _ in _codes(*docs)]
    assert "E501" in codes and "E521" in codes


# -- ports ------------------------------------------------------------------------


def test_gateways_in_pods_share_no_host_ports():
    docs = [
        Mesh(name="m"),
        Service(name="web", port=8080, app_port=19080),
        Gateway(name="a", listeners=[{"name": "web", "port": 8080}], routes=[{"to": "web"}]),
        Gateway(name="b", listeners=[{"name": "web", "port": 8080}], routes=[{"to": "web"}]),
    ]
    assert [c for c, _ in _codes(*docs) if c in ("E212", "E213", "E514", "E515")] == []


def test_a_gateway_in_pods_and_its_readiness_port():
    docs = [
        Mesh(name="m", kubernetes={"probe_port": 8080}),
        Service(name="web", port=9080, app_port=19080),
        Gateway(name="a", listeners=[{"name": "web", "port": 8080}], routes=[{"to": "web"}]),
    ]
    assert ("E515", "") in _codes(*docs)


def test_a_tcp_external_takes_a_port_on_its_callers_sidecar():
    docs = [
        Mesh(name="m"),
        Service(name="web", port=5432, app_port=19080, sidecar={"address": "127.0.70.1"}, calls=["db"]),
        ExternalService(name="db", host="db.example", port=5432, protocol="tcp"),
    ]
    assert "E212" in [c for c, _ in _codes(*docs)]


# -- services outside the mesh ------------------------------------------------------


def _called(*exts, **kw):
    return [
        Mesh(name="m", mtls={"mode": "strict"}),
        Service(name="web", port=9080, app_port=19080, sidecar={"address": "127.0.70.1"}, calls=[e.name for e in exts], **kw),
        *exts,
    ]


def test_calls_routes_traffic_policies_and_mirrors_accept_an_external():
    pay = ExternalService(name="pay", host="api.pay.example", port=443, tls={"ca": "/etc/ca.pem"})
    docs = _called(pay) + [
        Route(service="pay", rules=[{"to": {"default": 100}, "timeout": "2s", "mirror": [{"to": "default"}]}]),
        TrafficPolicy(service="pay", connection_pool={"max_connections": 5}, load_balancer={"policy": "least_request"}),
    ]
    assert _codes(*docs) == []
    assert _only("E209", *docs[:-2], Route(service="pay", rules=[{"to": {"v1": 100}}])) == ["rules[0].to"]


def test_an_external_reached_only_as_a_mirror_target_is_used():
    shadow = ExternalService(name="shadow", host="shadow.example", port=80)
    mirror = Route(service="api", rules=[{"to": {"default": 100}, "mirror": [{"to": "default", "service": "shadow"}]}])
    web_calls_api = [
        Mesh(name="m", mtls={"mode": "strict"}),
        Service(name="web", port=9080, app_port=19080, sidecar={"address": "127.0.70.1"}, calls=["api"]),
        Service(name="api", port=9080, app_port=19081, sidecar={"address": "127.0.70.2"}),
    ]
    assert _only("W531", *web_calls_api, shadow) == [""]
    assert _only("W531", *web_calls_api, shadow, mirror) == []
    # from a gateway route's destination, whose Route mirrors to it
    behind_gateway = _mesh() + [_gateway(routes=[{"to": "api"}]), shadow, mirror]
    assert _only("W531", *behind_gateway) == []
    # a Route of a service nobody calls or routes to builds nothing
    assert _only("W531", *_mesh(), shadow, mirror) == [""]


def test_an_external_host_that_is_a_mesh_service_name():
    for host in ("web", "web.default", "web.default.svc", "web.default.svc.cluster.local"):
        ext = ExternalService(name="x", host=host, port=80)
        assert _only("E522", *_called(ext)) == ["host"], host
    assert _only("E522", *_called(ExternalService(name="x", host="web.example", port=80))) == []


def test_two_externals_with_one_host_even_on_other_ports():
    a = ExternalService(name="a", host="api.example", port=443, tls={"ca": "/etc/ca.pem"})
    b = ExternalService(name="b", host="api.example", port=8443, tls={"ca": "/etc/ca.pem"})
    assert _codes(*_called(a, b)) == [("E523", "host")]


def test_inbound_side_traffic_settings_on_an_external():
    ext = ExternalService(name="db", host="db.example", port=5432, protocol="tcp")
    tp = TrafficPolicy(service="db", rate_limit={"requests": 1, "per": "1s"}, load_balancer={"policy": "round_robin", "hash_on": {"header": "x"}})
    codes = _codes(*_called(ext), tp)
    assert ("E525", "rate_limit") in codes and ("E234", "load_balancer.hash_on") in codes
    assert not any(c == "E234" and p == "rate_limit" for c, p in codes)  # said once, as E525


def test_tls_to_an_ip_address_needs_a_server_name():
    bare = ExternalService(name="x", host="192.0.2.1", port=443, tls={"ca": "/etc/ca.pem"})
    named = ExternalService(name="x", host="192.0.2.1", port=443, tls={"ca": "/etc/ca.pem", "sni": "x.example"})
    assert _codes(*_called(bare)) == [("E529", "tls")]
    assert _codes(*_called(named)) == []


def test_a_gateway_with_the_identity_of_a_service():
    docs = _mesh() + [_gateway(service_account="web", routes=[{"to": "web"}])]
    assert _codes(*docs) == [("E501", "")]
    other_ns = _mesh() + [_gateway(service_account="web", namespace="edge", routes=[{"to": "web"}])]
    assert _codes(*other_ns) == []


def test_a_route_path_that_normalisation_never_leaves():
    for path in ("/a//b", "/a/../b", "/%2Fadmin"):
        assert _only("E270", *_mesh(), _gateway(routes=[{"path": path, "to": "web"}])) == ["routes[0].path"], path
    assert _only("E270", *_mesh(), _gateway(routes=[{"path": "/search?q=", "to": "web"}])) == []


def test_shadowed_for_some_of_its_hosts_only_is_a_warning():
    assert _shadow({"hosts": ["a.example.com"], "to": "web"}, {"hosts": ["a.example.com", "b.example.com"], "path": "/x", "to": "api"}) == [
        ("W512", "routes[1]")
    ]
    # two earlier routes that together cover every host of a later one
    assert _shadow(
        {"hosts": ["a.example.com"], "to": "web"}, {"hosts": ["*.b.example.com"], "to": "web"},
        {"hosts": ["a.example.com", "x.b.example.com"], "to": "api"},
    ) == [("E511", "routes[2]")]
    # a route for any host after one for a host: the gateway was told to send that host elsewhere
    assert _shadow({"hosts": ["a.example.com"], "to": "web"}, {"to": "api"}) == []


CODES = (
    "E500 E501 E502 E503 E504 E505 E506 E507 E508 E509 E510 E511 W512 W513 E514 E515 E516 E517 W518 W519 "
    "E520 E521 E522 E523 E524 E525 E526 E527 E528 E529 W530 W531 E533"
).split()


@pytest.mark.parametrize("code", CODES)
def test_each_code_has_an_error_case_and_a_readme_row(code):
    expected = [p for p in (ROOT / "tests" / "errors").glob("*/expected.txt") if f"[{code}]" in p.read_text()]
    assert expected, f"no case under tests/errors/ shows {code}"
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| ") and code in line]
    assert rows, f"no row of the README's meaning checks table names {code}"
