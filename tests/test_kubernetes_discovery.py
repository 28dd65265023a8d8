"""Kubernetes mode, discovery: callers resolve each version's pods, pods answer readiness, checks refuse
what a cluster would not take. (Manifests: test_kubernetes_manifests.py; pods in a box: test_live_kubernetes.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from compiler import cli
from compiler.build import check_policies
from compiler.check import check
from compiler.emit import emit
from compiler.emit.observability import ADMIN_CLUSTER
from compiler.lower import lower
from compiler.policy import (
    AuthorizationPolicy,
    JwtProvider,
    Kubernetes,
    Mesh,
    PolicySet,
    RequestAuthentication,
    Service,
    TrafficPolicy,
)
from compiler.policy.kubernetes import cpu_millis, memory_bytes

ROOT = Path(__file__).resolve().parent.parent
DNS_CLUSTER = "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster"


def _policy(*docs, mesh: dict | None = None) -> PolicySet:
    return PolicySet((Mesh.model_validate({"name": "m", **(mesh or {})}), *docs))


def _bookinfo(*extra, mesh: dict | None = None, reviews: dict | None = None) -> PolicySet:
    return _policy(
        Service(name="productpage", namespace="shop", port=9080, app_port=19080, calls=["reviews"]),
        Service.model_validate({"name": "reviews", "namespace": "shop", "port": 9080, "app_port": 19081,
                                "versions": {"v1": {}, "v2": {}, "v3": {}}, **(reviews or {})}),
        *extra,
        mesh=mesh,
    )


def _sidecar(ir, name):
    return next(s for s in ir.sidecars if s.service == name)


def _envoy(policy, name):
    ir = lower(policy)
    return next(s for s in emit(ir).sidecars if s.service == name)


def _clusters(policy, name) -> dict[str, dict]:
    return {c["name"]: c for c in _envoy(policy, name).clusters}


def _codes(policy) -> list[tuple[str, str]]:
    return [(d.code, d.message) for d in check(policy)]


def _address(cluster: dict) -> str:
    (group,) = cluster["load_assignment"]["endpoints"]
    (ep,) = group["lb_endpoints"]
    sa = ep["endpoint"]["address"]["socket_address"]
    return f"{sa['address']}:{sa['port_value']}"


# -- callers' clusters ----------------------------------------------------------------------------------


def test_a_caller_resolves_each_version_by_its_headless_service():
    clusters = _clusters(_bookinfo(), "productpage")
    outbound = sorted(n for n in clusters if n.startswith("outbound|"))
    assert outbound == ["outbound|reviews|v1", "outbound|reviews|v2", "outbound|reviews|v3"], "one cluster per version"
    for v in ("v1", "v2", "v3"):
        c = clusters[f"outbound|reviews|{v}"]
        assert _address(c) == f"reviews-{v}.shop.svc.cluster.local:9080"
        assert "type" not in c, "the DNS cluster extension replaces type: STRICT_DNS"
        assert c["cluster_type"] == {
            "name": "envoy.cluster.dns",
            "typed_config": {"@type": DNS_CLUSTER, "dns_refresh_rate": "5s", "respect_dns_ttl": True,
                             "dns_lookup_family": "V4_PREFERRED"},
        }
        assert not any(k.startswith("dns_") or k == "respect_dns_ttl" for k in c), "no deprecated Cluster dns_* fields"
    assert _sidecar(lower(_bookinfo()), "productpage").source_address is None, "no source binding in pods"
    # the callee's own side still delivers to the app in its pod
    assert _address(_clusters(_bookinfo(), "reviews")["inbound|reviews|v2"]) == "127.0.0.1:19081"


def test_cluster_domain_and_refresh_come_from_the_mesh():
    policy = _bookinfo(mesh={"kubernetes": {"cluster_domain": "corp.example", "dns_refresh": "2500ms"}})
    c = _clusters(policy, "productpage")["outbound|reviews|v1"]
    assert _address(c) == "reviews-v1.shop.svc.corp.example:9080"
    assert c["cluster_type"]["typed_config"]["dns_refresh_rate"] == "2.500s"
    ir = lower(policy)
    assert _sidecar(ir, "productpage").clusters[-1].dns.refresh.ms == 2500


def test_balancing_ejection_and_health_checks_act_per_pod_on_the_caller():
    tp = TrafficPolicy.model_validate({
        "service": "reviews", "load_balancer": {"policy": "least_request"},
        "outlier_detection": {"consecutive_5xx": 3}, "health_check": {"path": "/health"},
    })
    c = _clusters(_bookinfo(tp), "productpage")["outbound|reviews|v1"]
    assert c["lb_policy"] == "LEAST_REQUEST"
    assert c["outlier_detection"]["consecutive_5xx"] == 3
    assert [h["http_health_check"]["path"] for h in c["health_checks"]] == ["/health"], "each pod is checked"
    # one host (a sidecar address): no caller-side health checks, as before
    one_host = _bookinfo(tp, mesh={"sidecar": {"address": "127.0.0.2"}})
    assert "health_checks" not in _clusters(one_host, "productpage")["outbound|reviews|v1"]


def test_a_version_with_explicit_endpoints_is_reached_through_any_pod_of_the_service():
    policy = _bookinfo(reviews={"versions": {"v1": {}, "vm": {"endpoints": ["10.1.2.3:9080"]}}})
    clusters = _clusters(policy, "productpage")
    assert _address(clusters["outbound|reviews|v1"]) == "reviews-v1.shop.svc.cluster.local:9080"
    assert _address(clusters["outbound|reviews|vm"]) == "reviews.shop.svc.cluster.local:9080", "the ClusterIP Service"
    assert _address(_clusters(policy, "reviews")["inbound|reviews|vm"]) == "10.1.2.3:9080", "explicit endpoints kept"
    k = _sidecar(lower(policy), "reviews").kubernetes
    assert [(v.name, v.headless_service, v.explicit_endpoints) for v in k.versions] == [
        ("v1", "reviews-v1", False), ("vm", "reviews-vm", True)
    ]


def test_a_service_without_versions_is_one_headless_service_selecting_all_its_pods():
    policy = _policy(
        Service(name="web", port=8080, app_port=18080, calls=["ratings"]),
        Service(name="ratings", port=9080, app_port=19080),
    )
    assert _address(_clusters(policy, "web")["outbound|ratings|default"]) == "ratings-default.default.svc.cluster.local:9080"
    k = _sidecar(lower(policy), "ratings").kubernetes
    (v,) = k.versions
    assert (v.name, v.headless_service, v.selector) == ("default", "ratings-default", (("app", "ratings"),))
    assert k.selector == (("app", "ratings"),)
    reviews = _sidecar(lower(_bookinfo()), "reviews").kubernetes
    assert reviews.versions[1].selector == (("app", "reviews"), ("version", "v2"))


def test_tracing_collector_and_rate_limit_service_follow_the_same_rule():
    policy = _policy(
        Service(name="web", port=8080, app_port=18080),
        Service(name="zipkin", port=9411, app_port=19411),
        Service(name="limits", protocol="grpc", port=8081, app_port=18081),
        TrafficPolicy.model_validate({"service": "web", "global_rate_limit": {"service": "limits", "domain": "d"}}),
        mesh={"observability": {"tracing": {"collector": "zipkin"}}},
    )
    clusters = _clusters(policy, "web")
    assert _address(clusters["outbound|zipkin|default"]) == "zipkin-default.default.svc.cluster.local:9411"
    assert _address(clusters["outbound|limits|default"]) == "limits-default.default.svc.cluster.local:8081"
    assert clusters["outbound|limits|default"]["cluster_type"]["name"] == "envoy.cluster.dns"


def test_one_host_services_are_unchanged():
    diags, policy = check_policies(ROOT / "policies" / "basic")
    assert policy is not None, diags
    ir = lower(policy)
    assert all(s.kubernetes is None and s.source_address is not None for s in ir.sidecars)
    pp = next(s for s in emit(ir).sidecars if s.service == "productpage")
    c = next(c for c in pp.clusters if c["name"] == "outbound|reviews|v1")
    assert (c["type"], _address(c)) == ("STATIC", "127.0.0.3:9080")
    assert "cluster_type" not in c
    assert [l["name"] for l in pp.listeners if l["name"] == "readiness"] == []
    assert ADMIN_CLUSTER not in {c["name"] for c in pp.clusters}, "no metrics, no readiness: no admin window"


# -- readiness listener and what the manifests need ------------------------------------------------------


def test_the_readiness_listener_exposes_only_ready():
    pp = _envoy(_bookinfo(mesh={"kubernetes": {"probe_port": 15555}}), "productpage")
    (ready,) = [l for l in pp.listeners if l["name"] == "readiness"]
    assert ready["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": 15555}}
    hcm = ready["filter_chains"][0]["filters"][0]["typed_config"]
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    assert vhost["routes"] == [{"match": {"path": "/ready"}, "route": {"cluster": ADMIN_CLUSTER}}], "everything else 404"
    admin = next(c for c in pp.clusters if c["name"] == ADMIN_CLUSTER)
    sa = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert sa["address"] == "127.0.0.1", "the admin interface stays on loopback"
    assert pp.bootstrap is not None and "readiness" not in str(pp.bootstrap), "listeners live in listeners.yaml"


def test_the_kubernetes_sidecar_carries_the_mesh_settings():
    policy = _bookinfo(mesh={"mtls": {"mode": "strict"}, "kubernetes": {
        "image": "registry.example:5000/envoy:v1.40.0", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}},
        "shutdown_grace": "30s", "certs_secret": "certs-{service}-tls",
    }})
    k = _sidecar(lower(policy), "reviews").kubernetes
    assert (k.namespace, k.cluster_domain, k.image, k.probe_port, k.readiness_address) == (
        "shop", "cluster.local", "registry.example:5000/envoy:v1.40.0", 15021, "0.0.0.0"
    )
    assert (dict(k.requests), dict(k.limits)) == ({"cpu": "250m"}, {"cpu": "1"}), "a list written replaces the default"
    assert (k.shutdown_grace.ms, k.certs_secret) == (30_000, "certs-reviews-tls")
    assert _sidecar(lower(_bookinfo()), "reviews").kubernetes.certs_secret is None, "no mTLS, no Secret"


# -- the model -------------------------------------------------------------------------------------------


def test_quantities_images_and_names_are_checked_where_they_are_written():
    assert (cpu_millis("100m"), cpu_millis("0.5"), cpu_millis("2")) == (100, 500, 2000)
    assert (memory_bytes("128Mi"), memory_bytes("1G")) == (128 * 2**20, 10**9)
    bad = [
        ({"resources": {"requests": {"cpu": "2 cores"}}}, "not a CPU quantity"),
        ({"resources": {"limits": {"memory": "1gb"}}}, "not a memory quantity"),
        ({"resources": {"requests": {"memory": "512Mi"}}}, "requests.memory 512Mi is more than limits.memory 256Mi"),
        ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}}, "requests.cpu 2 is more than"),
        ({"image": "Envoy:latest"}, "not a container image"),
        ({"certs_secret": "meshc-certs"}, "must contain {service}"),
        ({"certs_secret": "{service}_certs"}, "does not make a DNS label"),
        ({"dns_refresh": "50ms"}, "at least 100ms"),
        ({"shutdown_grace": "20500ms"}, "not whole seconds"),
        ({"cluster_domain": "Cluster.Local"}, "not a DNS domain"),
    ]
    for settings, message in bad:
        with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
            Kubernetes.model_validate(settings)
    ok = Kubernetes.model_validate({"image": "ghcr.io/acme/envoy@sha256:" + "a" * 64, "certs_secret": "{service}"})
    assert ok.certs_secret_of("reviews") == "reviews"


# -- checks ----------------------------------------------------------------------------------------------


def test_ports_in_a_pod_app_port_and_probe_port():
    same = _policy(Service(name="web", port=8080, app_port=8080))
    assert [c for c, _ in _codes(same)] == ["E212"]
    assert "the app (app_port)" in _codes(same)[0][1]
    # one host: the app's loopback port and a 127.0.0.x sidecar address do not clash in one pod
    assert _codes(_policy(Service(name="web", port=8080, app_port=8080, sidecar={"address": "127.0.0.2"}))) == []
    probe = _policy(Service(name="web", port=15021, app_port=18080))
    assert [c for c, _ in _codes(probe)] == ["E212"] and "readiness listener" in _codes(probe)[0][1]
    explicit = _policy(Service(name="web", port=8080, app_port=18080), mesh={"kubernetes": {"probe_port": 18080}})
    assert [c for c, _ in _codes(explicit)] == ["E212"], "the probe port may not be the app's either"


def test_names_kubernetes_would_refuse_or_overwrite():
    long_version = "v" + "x" * 56  # a valid version name; reviews-<it> is 65 characters
    assert [c for c, _ in _codes(_bookinfo(reviews={"versions": {"v1": {}, long_version: {}}}))] == ["E290"]
    long_domain = ".".join(["d" * 60] * 4)
    codes = _codes(_bookinfo(mesh={"kubernetes": {"cluster_domain": long_domain}}))
    assert {c for c, _ in codes} == {"E290"} and "longer than a DNS name (253)" in codes[0][1]
    clash = _policy(
        Service(name="ratings", port=9080, app_port=19080, versions={"v1": {}}),
        Service(name="ratings-v1", port=9080, app_port=19081),
    )
    ((code, message),) = _codes(clash)
    assert code == "E291" and "like the ClusterIP Service of 'ratings-v1'" in message
    other_ns = _policy(
        Service(name="ratings", port=9080, app_port=19080, versions={"v1": {}}),
        Service(name="ratings-v1", namespace="other", port=9080, app_port=19081),
    )
    assert _codes(other_ns) == [], "Services are per namespace"
    explicit = _policy(
        Service(name="ratings", port=9080, versions={"v1": {"endpoints": ["10.0.0.1:80"]}}),
        Service(name="ratings-v1", port=9080, app_port=19081),
    )
    assert _codes(explicit) == [], "a version with explicit endpoints has no headless Service"
    secret = _policy(Service(name="s" * 55, port=9080, app_port=19080), mesh={"mtls": {"mode": "strict"}})
    assert [c for c, _ in _codes(secret)] == ["E292"]


def test_pods_and_a_hosts_loopback_cannot_call_each_other():
    pod_to_host = _policy(
        Service(name="web", port=8080, app_port=18080, calls=["legacy"]),
        Service(name="legacy", port=9080, app_port=19080, sidecar={"address": "127.0.0.5"}),
    )
    ((code, message),) = _codes(pod_to_host)
    assert code == "E293" and "127.0.0.5 is the pod itself" in message
    host_to_pod = _policy(
        Service(name="web", port=8080, app_port=18080, calls=["api"], sidecar={"address": "127.0.0.5"}),
        Service(name="api", port=9080, app_port=19080),
    )
    assert [c for c, _ in _codes(host_to_pod)] == ["E293"]
    vm = _policy(
        Service(name="web", port=8080, app_port=18080, calls=["legacy"]),
        Service(name="legacy", port=9080, app_port=19080, sidecar={"address": "10.0.0.5"}),
    )
    assert _codes(vm) == [], "a host pods can reach is fine"
    tracing = _policy(
        Service(name="web", port=8080, app_port=18080),
        Service(name="zipkin", port=9411, app_port=19411, sidecar={"address": "127.0.0.9"}),
        mesh={"observability": {"tracing": {"collector": "zipkin"}}},
    )
    assert [c for c, _ in _codes(tracing)] == ["E293"], "the collector is an outbound cluster too"


def test_shutdown_grace_and_unused_settings():
    short = _bookinfo(mesh={"kubernetes": {"shutdown_grace": "15s"}})
    ((code, message),) = _codes(short)
    assert code == "E294" and "more than 15s" in message
    assert _codes(_bookinfo(mesh={"kubernetes": {"shutdown_grace": "16s"}})) == []
    assert [c for c, _ in _codes(_bookinfo(mesh={"kubernetes": {"dns_refresh": "1s", "shutdown_grace": "12s"}}))] == []
    unused = _policy(Service(name="web", port=8080, app_port=18080, sidecar={"address": "127.0.0.2"}),
                     mesh={"kubernetes": {"probe_port": 15555, "image": "envoyproxy/envoy:v1.40.0"}})
    assert [(d.code, d.path) for d in check(unused)] == [("E295", "kubernetes.image"), ("E295", "kubernetes.probe_port")]


def test_callers_health_checks_refused_by_the_callees_policies_are_warned():
    tp = TrafficPolicy.model_validate({"service": "reviews", "health_check": {"path": "/health"}})
    strict = {"mtls": {"mode": "strict"}}

    def warned(*docs):
        return [m for c, m in _codes(_bookinfo(tp, *docs, mesh=strict)) if c == "W296"]

    assert warned() == []
    assert warned(AuthorizationPolicy.model_validate({"service": "reviews", "allow": [{"from": ["productpage"]}]})) == []
    refused = warned(AuthorizationPolicy.model_validate(
        {"service": "reviews", "allow": [{"from": ["productpage"], "paths": [{"prefix": "/reviews"}]}]}))
    assert len(refused) == 1 and "does not allow it" in refused[0] and "GET /health" in refused[0]
    denied = warned(AuthorizationPolicy.model_validate({"service": "reviews", "deny": [{"paths": [{"exact": "/health"}]}]}))
    assert len(denied) == 1 and "denies it" in denied[0]
    assert warned(AuthorizationPolicy.model_validate(
        {"service": "reviews", "mode": "dry_run", "deny": [{"paths": [{"exact": "/health"}]}]})) == [], "dry run"
    jwks = '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
    jwt_all = RequestAuthentication(service="reviews", providers=[JwtProvider(name="p", issuer="i", jwks=jwks)])
    assert len(warned(jwt_all)) == 1
    jwt_api = RequestAuthentication.model_validate(
        {"service": "reviews", "providers": [{"name": "p", "issuer": "i", "jwks": jwks}], "rules": [{"paths": ["/api"]}]})
    assert warned(jwt_api) == [], "the token is required elsewhere"


# -- the golden case with the real Envoy -----------------------------------------------------------------


def test_the_kubernetes_case_builds_and_envoy_accepts_it(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["check", str(ROOT / "policies" / "kubernetes")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert cli.main(["build", str(ROOT / "policies" / "kubernetes"), "-o", str(out)]) == 0
    assert cli.main(["validate", str(out)]) == 0, capsys.readouterr()
    text = (out / "productpage" / "clusters.yaml").read_text()
    for v in ("v1", "v2", "v3"):
        assert f'"reviews-{v}.bookinfo.svc.cluster.local"' in text
    assert '"name": "readiness"' in (out / "reviews" / "listeners.yaml").read_text()
