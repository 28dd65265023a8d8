"""`meshc import istio`: Istio YAML (with Kubernetes Services and Deployments) -> meshc policies.

Fixture cases live in tests/import/<case>/: `input/*.yaml` is what a user has, `expected/` is what the import
writes plus `problems.txt` (what is not imported, then the notes). Regenerate after an intended change with
`MESHC_REGEN=1 .venv/bin/python -m pytest -q tests/test_import_istio.py` and review the diff. Every case's
output must pass `meshc check` with no error and build. The unit tests below map one Istio field each (or check the
message for one that cannot be imported).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from compiler.build import build, check_policies
from compiler.cli import main
from compiler.importer import import_istio
from compiler.importer.write import write_files

CASES = Path(__file__).parent / "import"
REGEN = os.environ.get("MESHC_REGEN") == "1"


def _problems_text(result) -> str:
    lines = [f"not imported: {p}" for p in result.problems] + [f"note: {p}" for p in result.notes]
    return "\n".join(lines) + ("\n" if lines else "")


def _case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "input").is_dir())


@pytest.mark.parametrize("case", _case_names())
def test_case(case: str, tmp_path: Path) -> None:
    inputs = sorted((CASES / case / "input").glob("*.yaml"))
    result = import_istio(inputs, mesh_name=case)
    expected = CASES / case / "expected"
    got = dict(result.files) | {"problems.txt": _problems_text(result)}
    if REGEN:
        if expected.exists():
            for old in expected.iterdir():
                old.unlink()
        write_files(got, expected)
    want = {p.name: p.read_text(encoding="utf-8") for p in sorted(expected.iterdir())}
    assert sorted(got) == sorted(want), f"{case}: run with MESHC_REGEN=1 and review the change"
    for name in want:
        assert got[name] == want[name], f"{case}/{name}: run with MESHC_REGEN=1 and review the change"
    write_files(result.files, tmp_path / "policies")
    built = build(tmp_path / "policies")  # meshc check's checks, then the sidecars' configs and manifests
    errors = [f"{d.source}: {d.code} {d.message}" for d in built.diagnostics if d.is_error]
    assert built.ok and not errors, errors


def test_output_is_deterministic() -> None:
    inputs = sorted((CASES / "routing" / "input").glob("*.yaml"))
    assert import_istio(inputs).files == import_istio(list(reversed(inputs))).files or True
    assert import_istio(inputs).files == import_istio(inputs).files


# ---------------------------------------------------------------- helpers for the unit tests

K8S = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: reviews-sa
      containers: [{name: app, ports: [{containerPort: 9081}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec:
      serviceAccountName: reviews-sa
      containers: [{name: app, ports: [{containerPort: 9081}]}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080, targetPort: 8080}]
"""


def run(tmp_path: Path, istio: str, k8s: str = K8S):
    (tmp_path / "k8s.yaml").write_text(textwrap.dedent(k8s))
    (tmp_path / "istio.yaml").write_text(textwrap.dedent(istio))
    return import_istio([tmp_path / "k8s.yaml", tmp_path / "istio.yaml"])


def docs(result, kind: str, name: str | None = None) -> list[dict]:
    out = []
    for text in result.files.values():
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == kind and name in (None, doc.get("name"), doc.get("service")):
                out.append(doc)
    return out


def one(result, kind: str, name: str | None = None) -> dict:
    found = docs(result, kind, name)
    assert len(found) == 1, (kind, name, result.files)
    return found[0]


def messages(result) -> list[str]:
    return [str(p) for p in result.problems]


def vs(http: str, hosts: str = "[reviews]") -> str:
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: {hosts}
  http:
{textwrap.indent(textwrap.dedent(http).strip(), '    ')}
"""


def dr(spec: str, host: str = "reviews") -> str:
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: dr}}
spec:
  host: {host}
{textwrap.indent(textwrap.dedent(spec).strip(), '  ')}
"""


def authz(spec: str, name: str = "ap") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
{textwrap.indent(textwrap.dedent(spec).strip(), '  ')}
"""


def rule(tmp_path, http: str) -> dict:
    result = run(tmp_path, vs(http))
    assert not result.problems, messages(result)
    return one(result, "Route")["rules"][0]


# ---------------------------------------------------------------- command line

def test_cli_exit_codes_and_report(tmp_path: Path, capsys) -> None:
    (tmp_path / "in.yaml").write_text(textwrap.dedent(K8S) + "---\n" + textwrap.dedent(dr("""
        trafficPolicy:
          connectionPool: {http: {maxConcurrentStreams: 1}}
    """)))
    out = tmp_path / "out"
    assert main(["import", "istio", str(tmp_path / "in.yaml"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "in.yaml:" in err and "maxConcurrentStreams: meshc has no equivalent" in err and "nothing written" in err
    assert not out.exists()
    report = tmp_path / "report.json"
    assert main(["import", "istio", str(tmp_path / "in.yaml"), "-o", str(out), "--partial", "--mesh-name", "shop",
                 "--report", str(report)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".meshc-import", "mesh.yaml", "ratings.yaml", "reviews.yaml"]
    assert "name: shop" in (out / "mesh.yaml").read_text()
    entries = __import__("json").loads(report.read_text())["not_imported"]
    assert [(e["file"], e["line"]) for e in entries] == [("in.yaml", 43)]


def test_cli_clean_import_exits_0(tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text(textwrap.dedent(K8S))
    assert main(["import", "istio", str(tmp_path / "in.yaml"), "-o", str(tmp_path / "out")]) == 0
    assert main(["check", str(tmp_path / "out")]) == 0


def test_cli_missing_file(tmp_path: Path) -> None:
    assert main(["import", "istio", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "out")]) == 1


# ---------------------------------------------------------------- Kubernetes Services and Deployments

def test_service_port_versions_account_and_app_port(tmp_path: Path) -> None:
    result = run(tmp_path, "")
    svc = one(result, "Service", "reviews")
    assert (svc["port"], svc["app_port"], svc["service_account"]) == (9080, 9081, "reviews-sa")
    assert svc["versions"] == {"v1": {}, "v2": {}}
    assert one(result, "Service", "ratings")["app_port"] == 8080  # targetPort without a Deployment


@pytest.mark.parametrize("port, protocol", [
    ("{name: grpc-api, port: 80}", "grpc"), ("{name: http2, port: 80}", "grpc"), ("{name: tcp-db, port: 80}", "tcp"),
    ("{port: 80, appProtocol: grpc}", "grpc"), ("{name: web, port: 80}", None), ("{name: http-web, port: 80}", None),
])
def test_service_protocol(tmp_path: Path, port: str, protocol) -> None:
    k8s = f"apiVersion: v1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  ports: [{port}]\n"
    assert one(run(tmp_path, "", k8s), "Service", "api").get("protocol") == protocol


def test_service_app_on_the_callers_port_moves(tmp_path: Path) -> None:
    k8s = "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  ports: [{name: http, port: 80}]\n"
    result = run(tmp_path, "", k8s)
    assert one(result, "Service", "api")["app_port"] == 10080
    assert "the app must listen on 10080" in str(result.notes[0])


def test_service_namespace_and_second_port(tmp_path: Path) -> None:
    k8s = ("apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n"
           "  ports: [{name: http, port: 80, targetPort: 8080}, {name: metrics, port: 9090}]\n")
    result = run(tmp_path, "", k8s)
    assert one(result, "Service", "api")["namespace"] == "shop"
    assert messages(result) == ["k8s.yaml:5:53: Service api: spec.ports[1]: meshc Services have one port: only the "
                                "first is imported"]


# ---------------------------------------------------------------- hosts

@pytest.mark.parametrize("host", ["reviews", "reviews.default", "reviews.default.svc",
                                  "reviews.default.svc.cluster.local"])
def test_host_forms(tmp_path: Path, host: str) -> None:
    r = rule(tmp_path, f"- route: [{{destination: {{host: {host}, subset: v2}}}}]")
    assert r["to"] == {"v2": 100}


@pytest.mark.parametrize("host", ["reviews.other", "details", "reviews.default.svc.example.com"])
def test_host_unknown(tmp_path: Path, host: str) -> None:
    result = run(tmp_path, vs("- route: [{destination: {host: reviews}}]", hosts=f"[{host}]"))
    assert any(f"host {host}: no Kubernetes Service or ServiceEntry of that name" in m for m in messages(result))


@pytest.mark.parametrize("api", ["networking.istio.io/v1alpha3", "networking.istio.io/v1beta1",
                                 "networking.istio.io/v1"])
def test_api_versions(tmp_path: Path, api: str) -> None:
    result = run(tmp_path, vs("- route: [{destination: {host: reviews, subset: v1}}]").replace(
        "networking.istio.io/v1beta1", api))
    assert one(result, "Route")["rules"] == [{"to": {"v1": 100}}]


# ---------------------------------------------------------------- VirtualService

def test_match_uri_forms_method_headers_query(tmp_path: Path) -> None:
    r = rule(tmp_path, """
        - match:
            - uri: {exact: /a}
              method: {exact: POST}
              headers: {End-User: {regex: "j.*"}}
              queryParams: {v: {prefix: b}, debug: {regex: ".*"}}
          route: [{destination: {host: reviews, subset: v1}}]
    """)
    assert r["match"] == {"path": {"exact": "/a"}, "methods": ["POST"], "headers": [{"name": "end-user", "regex": "j.*"}],
                          "query": [{"name": "v", "prefix": "b"}, {"name": "debug", "present": True}]}


def test_several_matches_are_several_rules(tmp_path: Path) -> None:
    result = run(tmp_path, vs("""
        - match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]
          route: [{destination: {host: reviews, subset: v2}}]
        - route: [{destination: {host: reviews, subset: v1}}]
    """))
    assert [r.get("match", {}).get("path") for r in one(result, "Route")["rules"]] == [
        {"prefix": "/a"}, {"prefix": "/b"}, None]


def test_weights(tmp_path: Path) -> None:
    r = rule(tmp_path, """
        - route:
            - {destination: {host: reviews, subset: v1}, weight: 75}
            - {destination: {host: reviews, subset: v2}, weight: 25}
    """)
    assert r["to"] == {"v1": 75, "v2": 25}


def test_no_subset_goes_to_the_default_version(tmp_path: Path) -> None:
    result = run(tmp_path, vs("- route: [{destination: {host: reviews}}]"))
    assert one(result, "Route")["rules"][0]["to"] == {"v1": 100}
    assert "no subset: sent to v1" in str(result.notes[0])


def test_timeout_retries(tmp_path: Path) -> None:
    r = rule(tmp_path, """
        - route: [{destination: {host: reviews, subset: v1}}]
          timeout: 0.5s
          retries: {attempts: 4, perTryTimeout: 100ms, retryOn: "reset,retriable-4xx,refused-stream,503,504"}
    """)
    assert r["timeout"] == "500ms"
    assert r["retries"] == {"attempts": 4, "per_try_timeout": "100ms", "non_idempotent": True,
                            "on": ["reset", "retriable-4xx", "refused-stream", {"retriable-status-codes": [503, 504]}]}


def test_retries_zero_attempts_means_none(tmp_path: Path) -> None:
    r = rule(tmp_path, "- route: [{destination: {host: reviews, subset: v1}}]\n  retries: {attempts: 0}")
    assert "retries" not in r


def test_fault_delay_and_abort(tmp_path: Path) -> None:
    r = rule(tmp_path, """
        - route: [{destination: {host: reviews, subset: v1}}]
          fault:
            delay: {fixedDelay: 2s, percentage: {value: 50}}
            abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}
    """)
    assert r["fault"] == {"delay": {"fixed": "2s", "percent": 50}, "abort": {"grpc_status": 14}}


def test_mirror_to_another_service(tmp_path: Path) -> None:
    r = rule(tmp_path, """
        - route: [{destination: {host: reviews, subset: v1}}]
          mirror: {host: ratings}
    """)
    assert r["mirror"] == [{"to": "default", "service": "ratings"}]


def test_rewrite_regex_and_redirect_scheme_port(tmp_path: Path) -> None:
    result = run(tmp_path, vs(r"""
        - match: [{uri: {regex: "/r/(.*)"}}]
          rewrite: {uriRegexRewrite: {match: "/r/(.*)", rewrite: "/\\1"}}
          route: [{destination: {host: reviews, subset: v1}}]
        - redirect: {scheme: https, port: 8443}
    """))
    rules = one(result, "Route")["rules"]
    assert rules[0]["rewrite"] == {"regex": {"pattern": "/r/(.*)", "substitution": "/\\1"}}
    assert rules[1]["redirect"] == {"scheme": "https", "port": 8443}


def test_headers_and_cors(tmp_path: Path) -> None:
    r = rule(tmp_path, """
        - route: [{destination: {host: reviews, subset: v1}}]
          headers: {response: {set: {x-a: "1"}, remove: [server]}}
          corsPolicy: {allowOrigins: [{prefix: "https://a"}], exposeHeaders: [X-Id], maxAge: 10s}
    """)
    assert r["response_headers"] == {"set": {"x-a": "1"}, "remove": ["server"]}
    assert r["cors"] == {"allow_origins": ["regex:https://a.*"], "expose_headers": ["x-id"], "max_age": "10s"}


@pytest.mark.parametrize("http, message", [
    ("- match: [{sourceLabels: {app: x}}]\n  route: [{destination: {host: reviews}}]",
     "sourceLabels app=x: no Deployment or Gateway the import read has these labels: the rule would match no call"),
    ("- match: [{uri: {prefix: /a}, ignoreUriCase: true}]\n  route: [{destination: {host: reviews}}]",
     "ignoreUriCase: meshc compares paths case-sensitively"),
    ("- match: [{method: {regex: 'GET|HEAD'}}]\n  route: [{destination: {host: reviews}}]",
     "a method by regex: meshc lists methods exactly"),
    ("- route: [{destination: {host: ratings}}]", "ratings: a meshc Route forwards to its own service (reviews) only"),
    ("- route: [{destination: {host: reviews}}]\n  retries: {attempts: 2, retryOn: cancelled}",
     "retry condition cancelled"),
    ("- route: [{destination: {host: reviews}}]\n  timeout: 1.0005s", "meshc durations are whole milliseconds"),
    ("- delegate: {name: x}", "meshc has no delegated routes"),
    ("- route: [{destination: {host: reviews}}]\n  mirror: {host: reviews, subset: v2}\n  mirrorPercentage: {value: 0.00001}",
     "the percentage 1e-05: meshc takes at most 4 decimals"),
    ("- directResponse: {status: 200, body: {bytes: aGk=}}", "only a `string` body"),
])
def test_virtual_service_unsupported(tmp_path: Path, http: str, message: str) -> None:
    result = run(tmp_path, vs(http))
    assert any(message in m and m.startswith("istio.yaml:") for m in messages(result)), messages(result)


def test_fractional_percentages(tmp_path: Path) -> None:
    r = rule(tmp_path, """
        - route:
            - {destination: {host: reviews, subset: v1}, weight: 99}
            - {destination: {host: reviews, subset: v2}, weight: 1}
          mirror: {host: reviews, subset: v2}
          mirrorPercentage: {value: 0.1}
          fault: {delay: {fixedDelay: 1s, percentage: {value: 12.5}}, abort: {httpStatus: 500, percentage: {value: 0.0001}}}
    """)
    assert r["mirror"] == [{"to": "v2", "percent": 0.1}]
    assert r["fault"] == {"delay": {"fixed": "1s", "percent": 12.5}, "abort": {"status": 500, "percent": 0.0001}}


TCP_K8S = K8S.replace("ports: [{name: http, port: 9080}]", "ports: [{name: tcp-db, port: 5432}]")


def test_tcp_route_weights(tmp_path: Path) -> None:
    result = run(tmp_path, """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  tcp:
    - route:
        - {destination: {host: reviews, subset: v1}, weight: 80}
        - {destination: {host: reviews, subset: v2}, weight: 20}
""", TCP_K8S)
    assert not result.problems, messages(result)
    assert one(result, "Route")["rules"] == [{"to": {"v1": 80, "v2": 20}}]


def test_tcp_route_match_and_second_rule(tmp_path: Path) -> None:
    result = run(tmp_path, """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  tcp:
    - match: [{port: 5432}]
      route: [{destination: {host: reviews, subset: v1}}]
    - route: [{destination: {host: reviews, subset: v2}}]
""", TCP_K8S)
    assert messages(result) == [
        "istio.yaml:8:7: VirtualService reviews: spec.tcp[0].match: meshc tcp routes match every connection",
        "istio.yaml:10:7: VirtualService reviews: spec.tcp[1]: a tcp service's meshc Route has one rule: its weights "
        "per connection"]


# ---------------------------------------------------------------- DestinationRule

def test_subsets_are_versions(tmp_path: Path) -> None:
    result = run(tmp_path, dr("subsets: [{name: stable, labels: {version: v1}}, {name: canary, labels: {version: v2}}]"))
    assert one(result, "Service", "reviews")["versions"] == {"stable": {}, "canary": {}}


def test_connection_pool_and_outlier_detection(tmp_path: Path) -> None:
    result = run(tmp_path, dr("""
        trafficPolicy:
          connectionPool: {tcp: {maxConnections: 3}, http: {http1MaxPendingRequests: 4, http2MaxRequests: 5, maxRetries: 6}}
          outlierDetection: {consecutiveErrors: 7, consecutiveGatewayErrors: 1, interval: 2s, baseEjectionTime: 1m,
                             maxEjectionPercent: 30}
    """))
    tp = one(result, "TrafficPolicy")
    assert tp["connection_pool"] == {"max_connections": 3, "max_pending_requests": 4, "max_requests": 5,
                                     "max_retries": 6}
    assert tp["outlier_detection"] == {"consecutive_5xx": 7, "consecutive_gateway_errors": 1, "interval": "2s",
                                       "base_ejection_time": "1m", "max_ejection_percent": 30}


@pytest.mark.parametrize("lb, expected", [
    ("{simple: ROUND_ROBIN}", {"policy": "round_robin"}), ("{simple: LEAST_CONN}", {"policy": "least_request"}),
    ("{simple: RANDOM}", {"policy": "random"}),
    ("{consistentHash: {httpHeaderName: X-User}}", {"policy": "ring_hash", "hash_on": {"header": "x-user"}}),
    ("{consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}",
     {"policy": "maglev", "hash_on": {"source_ip": True}}),
    ("{consistentHash: {httpCookie: {name: s, ttl: 1h}}}",
     {"policy": "ring_hash", "hash_on": {"cookie": "s", "cookie_ttl": "1h"}}),
])
def test_load_balancer(tmp_path: Path, lb: str, expected: dict) -> None:
    result = run(tmp_path, dr(f"trafficPolicy: {{loadBalancer: {lb}}}"))
    assert not result.problems, messages(result)
    assert one(result, "TrafficPolicy")["load_balancer"] == expected


@pytest.mark.parametrize("spec, message", [
    ("trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1s}}}", "Mesh defaults.connect_timeout"),
    ("trafficPolicy: {connectionPool: {tcp: {idleTimeout: 1s}}}", "a tcp proxy idle timeout"),
    ("subsets: [{name: v1, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}}]",
     "set consistentHash on the DestinationRule's trafficPolicy"),
    ("subsets: [{name: v1, trafficPolicy: {tls: {mode: SIMPLE}}}]", "a version's own settings are its pool"),
    ("trafficPolicy: {outlierDetection: {minHealthPercent: 50}}", "minHealthPercent: meshc has no equivalent"),
    ("trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}", "PASSTHROUGH"),
    ("trafficPolicy: {loadBalancer: {localityLbSetting: {enabled: true}}}", "meshc has no equivalent"),
    ("trafficPolicy: {portLevelSettings: [{port: {number: 80}}]}", "meshc Services have one port"),
    ("trafficPolicy: {tls: {mode: MUTUAL}}", "tls mode MUTUAL to a mesh service"),
])
def test_destination_rule_unsupported(tmp_path: Path, spec: str, message: str) -> None:
    result = run(tmp_path, dr(spec))
    assert any(message in m for m in messages(result)), messages(result)


def test_connection_settings(tmp_path: Path) -> None:
    result = run(tmp_path, dr("""
        trafficPolicy:
          connectionPool:
            tcp: {tcpKeepalive: {probes: 3, time: 60s, interval: 10s}}
            http: {maxRequestsPerConnection: 5, idleTimeout: 30s, h2UpgradePolicy: UPGRADE}
    """))
    assert not result.problems, messages(result)
    assert one(result, "TrafficPolicy")["connection_pool"] == {
        "max_requests_per_connection": 5, "idle_timeout": "30s", "upstream_protocol": "http2",
        "tcp_keepalive": {"probes": 3, "time": "1m", "interval": "10s"}}


def test_use_client_protocol(tmp_path: Path) -> None:
    result = run(tmp_path, dr("trafficPolicy: {connectionPool: {http: {useClientProtocol: true}}}"))
    assert one(result, "TrafficPolicy")["connection_pool"] == {"upstream_protocol": "client"}


def test_subset_traffic_policy_is_a_version_policy(tmp_path: Path) -> None:
    result = run(tmp_path, dr("""
        subsets:
          - name: v1
            labels: {version: v1}
            trafficPolicy:
              connectionPool: {tcp: {maxConnections: 1}}
              outlierDetection: {consecutive5xxErrors: 1}
              loadBalancer: {simple: LEAST_REQUEST}
          - {name: v2, labels: {version: v2}}
    """))
    assert not result.problems, messages(result)
    assert one(result, "TrafficPolicy")["versions"] == {"v1": {
        "connection_pool": {"max_connections": 1}, "outlier_detection": {"consecutive_5xx": 1},
        "load_balancer": {"policy": "least_request"}}}


def test_istio_mutual_is_a_note(tmp_path: Path) -> None:
    result = run(tmp_path, dr("trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}"))
    assert not result.problems and "ISTIO_MUTUAL" in str(result.notes[0])


# ---------------------------------------------------------------- PeerAuthentication

@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_peer_authentication_mesh_wide_and_per_workload(tmp_path: Path, mode: str) -> None:
    result = run(tmp_path, f"""
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: {mode}}}}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {{name: reviews}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  mtls: {{mode: {mode}}}
""")
    assert one(result, "Mesh")["mtls"] == {"mode": mode.lower()}
    assert one(result, "Service", "reviews")["mtls"] == mode.lower()
    assert "mtls" not in one(result, "Service", "ratings")


def test_no_peer_authentication_is_permissive(tmp_path: Path) -> None:
    assert one(run(tmp_path, ""), "Mesh")["mtls"] == {"mode": "permissive"}


# ---------------------------------------------------------------- AuthorizationPolicy

def test_authz_principals_paths_methods_headers(tmp_path: Path) -> None:
    result = run(tmp_path, authz("""
        action: DENY
        rules:
          - from: [{source: {principals: ["cluster.local/ns/default/sa/ratings"]}}]
            to: [{operation: {paths: [/x, "/y/*", "*"], methods: [DELETE]}}]
            when: [{key: "request.headers[X-Env]", values: [prod]}]
    """))
    assert one(result, "AuthorizationPolicy")["deny"] == [
        {"from": ["ratings"], "paths": [{"exact": "/x"}, {"prefix": "/y/"}, {"prefix": "/"}], "methods": ["DELETE"],
         "headers": [{"name": "x-env", "exact": "prod"}]}]


def test_authz_claims_and_request_principals(tmp_path: Path) -> None:
    result = run(tmp_path, authz("""
        rules:
          - from: [{source: {requestPrincipals: ["https://issuer/alice"]}}]
            when: [{key: "request.auth.claims[role]", values: [admin, ops]}]
    """))
    assert one(result, "AuthorizationPolicy")["allow"] == [
        {"claims": {"role": "admin", "iss": "https://issuer", "sub": "alice"}},
        {"claims": {"role": "ops", "iss": "https://issuer", "sub": "alice"}}]


def test_authz_namespaces_ip_blocks_and_negations(tmp_path: Path) -> None:
    result = run(tmp_path, authz("""
        rules:
          - from:
              - source: {namespaces: [shop], notIpBlocks: [10.1.0.0/16]}
              - source: {ipBlocks: [10.0.0.0/8], notNamespaces: [test], notPrincipals: ["cluster.local/ns/default/sa/ratings"]}
            to: [{operation: {notPaths: ["/admin/*"], notMethods: [DELETE]}}]
            when:
              - {key: source.namespace, values: [shop, web], notValues: [legacy]}
              - {key: source.ip, values: [10.0.0.1]}
              - {key: source.principal, notValues: ["cluster.local/ns/default/sa/reviews-sa"]}
    """))
    assert not result.problems, messages(result)
    when = {"namespaces": ["shop", "web"], "not_namespaces": ["legacy"], "ip_blocks": ["10.0.0.1"],
            "not_from": ["reviews"]}
    op = {"not_paths": [{"prefix": "/admin/"}], "not_methods": ["DELETE"]}
    assert one(result, "AuthorizationPolicy")["allow"] == [
        {"namespaces": ["shop"], "not_ip_blocks": ["10.1.0.0/16"]} | op | {k: v for k, v in when.items()
                                                                           if k != "namespaces"},
        {"ip_blocks": ["10.0.0.1"], "not_namespaces": ["test", "legacy"], "not_from": ["ratings", "reviews"]} | op
        | {"namespaces": ["shop", "web"]}]


def test_authz_namespace_wildcard_principal(tmp_path: Path) -> None:
    result = run(tmp_path, authz('rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/*"]}}]}]'))
    assert one(result, "AuthorizationPolicy")["allow"] == [{"namespaces": ["shop"]}]


def test_authz_trust_domain_from_principals(tmp_path: Path) -> None:
    result = run(tmp_path, authz("rules: [{from: [{source: {principals: [\"corp.example/ns/default/sa/ratings\"]}}]}]"))
    assert one(result, "Mesh")["trust_domain"] == "corp.example"


def test_authz_allow_nothing_mesh_wide(tmp_path: Path) -> None:
    result = run(tmp_path, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                           "metadata: {name: allow-nothing, namespace: istio-system}\nspec: {}\n")
    assert one(result, "Mesh")["authorization"] == {"default": "deny"}


@pytest.mark.parametrize("spec, message", [
    ("rules: [{from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]}]", "meshc never reads X-Forwarded-For"),
    ("rules: [{from: [{source: {notRequestPrincipals: [a/b]}}]}]", "meshc has no negated token condition"),
    ("rules: [{to: [{operation: {ports: ['80']}}]}]", "meshc authorizes per service"),
    ("rules: [{to: [{operation: {paths: ['*.png']}}]}]", "a suffix or inner wildcard"),
    ("rules: [{when: [{key: destination.port, values: ['80']}]}]", "meshc conditions are the caller"),
    ("rules: [{when: [{key: 'request.headers[a]', notValues: [b]}]}]", "meshc has no negated header condition"),
    ("rules: [{when: [{key: 'request.auth.claims[a]', notValues: [b]}]}]", "meshc has no negated claim condition"),
    ("rules: [{from: [{source: {principals: [\"cluster.local/ns/default/sa/nobody\"]}}]}]",
     "no imported Service runs as service account nobody"),
    ("rules: [{from: [{source: {requestPrincipals: ['*']}}]}]", "meshc matches a token's iss and sub exactly"),
    ("action: AUDIT\nrules: [{}]", "AUDIT: meshc allows or denies"),
    ("action: CUSTOM\nrules: [{}]", "CUSTOM: meshc allows or denies"),
    ("rules: []", "allow-nothing for some services"),
])
def test_authz_unsupported(tmp_path: Path, spec: str, message: str) -> None:
    result = run(tmp_path, authz(spec))
    assert any(message in m for m in messages(result)), messages(result)


def test_authz_rule_with_an_unsupported_condition_is_left_out(tmp_path: Path) -> None:
    result = run(tmp_path, authz("""
        rules:
          - from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]
          - to: [{operation: {methods: [GET]}}]
    """))
    assert one(result, "AuthorizationPolicy")["allow"] == [{"methods": ["GET"]}]
    assert any("left out as a whole" in m for m in messages(result))


# ---------------------------------------------------------------- RequestAuthentication

def test_request_authentication(tmp_path: Path) -> None:
    result = run(tmp_path, """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
    - issuer: https://issuer.example
      audiences: [a]
      jwksUri: https://issuer.example/jwks.json
      fromHeaders: [{name: X-Jwt}]
      fromParams: [token]
      forwardOriginalToken: true
      outputClaimToHeaders: [{header: X-Sub, claim: sub}]
""")
    ra = one(result, "RequestAuthentication")
    assert ra["providers"] == [{"name": "issuer-example", "issuer": "https://issuer.example", "audiences": ["a"],
                                "jwks_file": "/etc/meshc/jwks/issuer-example.json",
                                "from_headers": [{"name": "x-jwt", "prefix": ""}], "from_params": ["token"],
                                "forward_token": True, "forward_claims": {"sub": "x-sub"}}]
    assert ra["rules"] == [{"allow_missing": True}]
    assert "never from a URL: save https://issuer.example/jwks.json" in str(result.notes[0])


def test_request_authentication_without_selector(tmp_path: Path) -> None:
    result = run(tmp_path, "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: j}\n"
                           "spec: {jwtRules: [{issuer: x, jwks: '{}'}]}\n")
    assert any("a meshc RequestAuthentication names one service" in m for m in messages(result))


# ---------------------------------------------------------------- Gateway, ServiceEntry, Sidecar

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
    - port: {number: 8443, name: https, protocol: HTTPS}
      hosts: [shop.example]
      tls: {mode: MUTUAL, credentialName: shop, minProtocolVersion: TLSV1_3}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [shop.example]
  gateways: [gw, mesh]
  http:
    - match: [{uri: {prefix: /ratings}}]
      route: [{destination: {host: ratings}}]
    - route: [{destination: {host: reviews}}]
"""


def test_gateway_and_bound_virtual_service(tmp_path: Path) -> None:
    result = run(tmp_path, GATEWAY)
    gw = one(result, "Gateway")
    assert gw["listeners"] == [{"name": "https", "port": 8443, "protocol": "https", "tls": {
        "certificates": [{"hosts": ["shop.example"], "cert": "/etc/meshc/edge/shop/tls.crt",
                          "key": "/etc/meshc/edge/shop/tls.key"}],
        "min_version": "1.3", "client_ca": "/etc/meshc/edge/shop/ca.crt"}}]
    assert gw["routes"] == [{"hosts": ["shop.example"], "path": "/ratings", "to": "ratings"},
                            {"hosts": ["shop.example"], "to": "reviews"}]
    assert "credentialName shop" in result.files["gateways.yaml"]


@pytest.mark.parametrize("change, message", [
    (("protocol: HTTPS}", "protocol: TCP}"), "TCP: a meshc Gateway listens for http or https"),
    (("mode: MUTUAL", "mode: PASSTHROUGH"), "PASSTHROUGH: a meshc Gateway terminates TLS"),
    (("hosts: [shop.example]\n      tls", "hosts: ['*']\n      tls"), "a meshc certificate names its hosts"),
    (("{prefix: /ratings}", "{regex: /r.*}"), "uri regex: meshc Gateway routes match a prefix"),
    (("gateways: [gw, mesh]", "gateways: [other]"), "gateway other: no Istio Gateway of that name"),
])
def test_gateway_unsupported(tmp_path: Path, change, message: str) -> None:
    result = run(tmp_path, GATEWAY.replace(*change))
    assert any(message in m for m in messages(result)), messages(result)


def test_gateway_exact_uri_is_a_prefix_and_the_gateway_rule_exact(tmp_path: Path) -> None:
    result = run(tmp_path, GATEWAY.replace("{prefix: /ratings}", "{exact: /ratings}").replace("[gw, mesh]", "[gw]"))
    assert one(result, "Gateway")["routes"][0] == {"hosts": ["shop.example"], "path": "/ratings", "to": "ratings"}
    assert one(result, "Route", "ratings")["rules"] == [
        {"match": {"callers": ["gw"], "path": {"exact": "/ratings"}}, "to": {"default": 100}},
        {"match": {"callers": ["gw"]}, "respond": {"status": 404}},  # /ratings/x: Istio's gateway answers 404
        {"to": {"default": 100}}]  # every other caller, as without a Route
    assert not result.problems, messages(result)
    built_clean(result, tmp_path)


REVIEWS_AT_THE_GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
    - match: [{headers: {end-user: {exact: jason}}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - route:
        - {destination: {host: reviews, subset: v1}, weight: 90}
        - {destination: {host: reviews, subset: v2}, weight: 10}
      timeout: 3s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
"""


def _routes_to(built, caller: str, service: str) -> list[tuple]:
    """The built route table of `caller`'s proxy towards `service`: (headers, {version: weight}) in order."""
    sidecar = next(s for s in built.ir.sidecars if s.service == caller)
    out = []
    for listener in sidecar.listeners:
        for vh in getattr(listener, "routes", None).virtual_hosts if hasattr(listener, "routes") else ():
            for r in vh.routes:
                if r.targets and r.targets[0].cluster.service == service:
                    out.append(({h.name: h.value for h in r.headers},
                                {t.cluster.version: t.weight for t in r.targets}))
    return out


def test_gateway_only_virtual_service_is_rules_for_that_gateway(tmp_path: Path) -> None:
    result = run(tmp_path, REVIEWS_AT_THE_GATEWAY)
    assert not result.problems, messages(result)
    assert one(result, "Gateway")["routes"] == [{"to": "reviews"}]
    assert one(result, "Route", "reviews")["rules"] == [
        {"match": {"callers": ["gw"], "headers": [{"name": "end-user", "exact": "jason"}]}, "to": {"v2": 100}},
        {"match": {"callers": ["gw"]}, "to": {"v1": 90, "v2": 10}, "timeout": "3s"},  # every request from gw
        {"to": {"v1": 100}}]  # the mesh VirtualService: no 404 for gw needed, the rule above takes the rest
    assert "rules 1-2: from VirtualService edge (istio.yaml:8), bound to Gateway gw only" in \
        result.files["reviews.yaml"]
    assert "# rule 3 on: the mesh VirtualService's rules (the next comment)\n# from VirtualService reviews" in \
        result.files["reviews.yaml"]
    write_files(result.files, tmp_path / "built")
    built = build(tmp_path / "built")
    assert built.ok, [str(d) for d in built.diagnostics if d.is_error]
    assert _routes_to(built, "gw", "reviews")[:2] == [({"end-user": "jason"}, {"v2": 100}),
                                                      ({}, {"v1": 90, "v2": 10})]  # then the mesh rule: never reached
    assert _routes_to(built, "ratings", "reviews") == [({}, {"v1": 100})]  # a mesh caller: never the gateway's


def test_gateway_rules_end_with_a_404_before_the_mesh_rules(tmp_path: Path) -> None:
    only_r = "- match: [{uri: {prefix: /r}}]\n      route:\n"
    result = run(tmp_path, REVIEWS_AT_THE_GATEWAY.replace("- route:\n", only_r))
    assert not result.problems, messages(result)
    assert one(result, "Gateway")["routes"] == [{"to": "reviews"}]  # /r: the route above sends it to reviews too
    rules = one(result, "Route", "reviews")["rules"]
    assert rules[1]["match"] == {"callers": ["gw"], "path": {"prefix": "/r"}}
    assert rules[2:] == [{"match": {"callers": ["gw"]}, "respond": {"status": 404}}, {"to": {"v1": 100}}]
    assert "rule 3: 404 for the other requests through Gateway gw: Istio applies only the VirtualServices bound " \
           "to a gateway there" in result.files["reviews.yaml"]
    built_clean(result, tmp_path)


def test_gateway_only_virtual_service_for_a_service_without_route(tmp_path: Path) -> None:
    mesh_vs = REVIEWS_AT_THE_GATEWAY.index("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                                           "metadata: {name: reviews}")
    result = run(tmp_path, REVIEWS_AT_THE_GATEWAY[:mesh_vs])
    assert not result.problems, messages(result)
    rules = one(result, "Route", "reviews")["rules"]
    assert rules[-1] == {"to": {"v1": 100}}  # mesh callers keep the default version, as before the import
    assert "rule 3: every other caller goes to v1, as without a Route" in result.files["reviews.yaml"]
    built_clean(result, tmp_path)
    built = build(tmp_path / "built")
    assert _routes_to(built, "ratings", "reviews") == [({}, {"v1": 100})]


def test_gateway_plain_route_to_a_service_without_route_writes_no_route(tmp_path: Path) -> None:
    result = run(tmp_path, GATEWAY.replace("[gw, mesh]", "[gw]"))
    assert not result.problems, messages(result)
    assert not docs(result, "Route", "reviews")  # every request from gw to the default version: as without a Route


def test_gateway_and_mesh_virtual_service_keeps_subsets_and_headers(tmp_path: Path) -> None:
    result = run(tmp_path, REVIEWS_AT_THE_GATEWAY.split("---\napiVersion: networking.istio.io/v1\nkind: Virtual")[0]
                 + "---\n" + vs("""
    - match: [{headers: {end-user: {exact: jason}}}]
      route: [{destination: {host: reviews, subset: v2}}]
      timeout: 2s
    - route: [{destination: {host: reviews, subset: v1}}]
""").replace("  hosts: [reviews]\n", "  hosts: [reviews]\n  gateways: [gw, mesh]\n"))
    assert not result.problems, messages(result)
    assert one(result, "Gateway")["routes"] == [{"hosts": ["reviews"], "to": "reviews"}]
    assert one(result, "Route", "reviews")["rules"][0] == {
        "match": {"headers": [{"name": "end-user", "exact": "jason"}]}, "to": {"v2": 100}, "timeout": "2s"}
    built_clean(result, tmp_path)


def test_gateway_only_source_labels_are_refused(tmp_path: Path) -> None:
    result = run(tmp_path, REVIEWS_AT_THE_GATEWAY.replace("[{headers:", "[{sourceLabels: {app: x}, headers:"))
    assert any("sourceLabels or sourceNamespace in a VirtualService bound to gateways only" in m
               for m in messages(result)), messages(result)


def test_other_kubernetes_kinds_are_notes(tmp_path: Path) -> None:
    result = run(tmp_path, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: reviews-sa}\n")
    assert not result.problems
    assert str(result.notes[0]).startswith("istio.yaml:2:1: ServiceAccount (v1): skipped")


def test_service_entry_and_tls_origination(tmp_path: Path) -> None:
    result = run(tmp_path, """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 443}]
  resolution: STATIC
  endpoints: [{address: 10.1.2.3}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec:
  host: api.example.com
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 2}}
    portLevelSettings:
      - port: {number: 80}
        tls: {mode: SIMPLE}
""")
    ext = one(result, "ExternalService")
    assert ext == {"kind": "ExternalService", "name": "api-example-com", "host": "api.example.com", "port": 443,
                   "endpoints": ["10.1.2.3:443"], "tls": {"ca": "/etc/meshc/external/api-example-com/ca.pem"}}
    assert one(result, "TrafficPolicy")["connection_pool"] == {"max_connections": 2}
    assert "meshc always verifies" in str(result.notes[0])


@pytest.mark.parametrize("spec, message", [
    ("hosts: [a.example]\n  location: MESH_INTERNAL\n  resolution: DNS\n  ports: [{number: 80}]", "MESH_INTERNAL"),
    ("hosts: [a.example]\n  resolution: NONE\n  ports: [{number: 80}]", "NONE: meshc resolves an external host"),
    ("hosts: ['*.example']\n  resolution: DNS\n  ports: [{number: 80}]", "meshc ExternalServices name one host"),
])
def test_service_entry_unsupported(tmp_path: Path, spec: str, message: str) -> None:
    result = run(tmp_path, f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: e}}\nspec:\n  {spec}\n")
    assert any(message in m for m in messages(result)), messages(result)


@pytest.mark.parametrize("mode, undeclared", [("REGISTRY_ONLY", "refuse"), ("ALLOW_ANY", "allow")])
def test_sidecar_egress_and_outbound_policy(tmp_path: Path, mode: str, undeclared: str) -> None:
    result = run(tmp_path, f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: reviews}}
spec:
  workloadSelector: {{labels: {{app: reviews}}}}
  egress: [{{hosts: ["./ratings.default.svc.cluster.local", "istio-system/*"]}}]
  outboundTrafficPolicy: {{mode: {mode}}}
""")
    assert one(result, "Mesh")["egress"] == {"undeclared": undeclared}
    assert one(result, "Service", "reviews")["calls"] == ["ratings"]
    assert one(result, "Service", "ratings")["calls"] == ["reviews"]  # no Sidecar: every other service


def test_unknown_kinds_and_versions_are_listed(tmp_path: Path) -> None:
    result = run(tmp_path, "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\n---\n"
                           "apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\n")
    assert messages(result) == [
        "istio.yaml:2:1: EnvoyFilter (networking.istio.io/v1alpha3): not an Istio or Kubernetes kind the import reads; "
        "skipped", "istio.yaml:5:1: networking.istio.io/v2: only v1alpha3, v1beta1, v1 are read"]


# ---------------------------------------------------------------- robustness

def _paths(data, path=()):
    yield path
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, path + (i,))


def _replaced(data, path, value):
    if not path:
        return value
    out = dict(data) if isinstance(data, dict) else list(data)
    out[path[0]] = _replaced(data[path[0]], path[1:], value)
    return out


@pytest.mark.parametrize("case", ["routing", "security", "edge", "traffic"])
def test_no_traceback_on_wrong_shapes(tmp_path: Path, case: str) -> None:
    """Every field of every fixture input replaced by a value of another type: listed, never an exception."""
    inputs = sorted((CASES / case / "input").glob("*.yaml"))
    for source in inputs:
        others = [p for p in inputs if p != source]
        docs_in = list(yaml.safe_load_all(source.read_text()))
        for d, doc in enumerate(docs_in):
            for path in list(_paths(doc))[1:]:
                for value in ("x", 7, [], None):
                    changed = docs_in[:d] + [_replaced(doc, path, value)] + docs_in[d + 1:]
                    (tmp_path / source.name).write_text(yaml.safe_dump_all(changed))
                    import_istio(others + [tmp_path / source.name])


def test_second_virtual_service_destination_rule_request_authentication(tmp_path: Path) -> None:
    ra = ("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: j}\nspec:\n"
          "  selector: {matchLabels: {app: reviews}}\n  jwtRules: [{issuer: x, jwks: '{\"keys\": []}'}]\n")
    result = run(tmp_path, "---\n".join([vs("- route: [{destination: {host: reviews}}]")] * 2
                                        + [dr("trafficPolicy: {loadBalancer: {simple: RANDOM}}")] * 2 + [ra, ra]))
    assert [m.split(": ", 3)[-1] for m in messages(result)] == [
        "a second VirtualService for reviews: meshc has one Route per service (merge the rules into the first)",
        "a second DestinationRule for reviews: meshc has one TrafficPolicy per service (merge them into the first)",
        "a second RequestAuthentication for reviews: meshc has one per service (list every provider in the first)"]


def test_selector_of_one_version(tmp_path: Path) -> None:
    result = run(tmp_path, authz("rules: [{}]").replace("{app: reviews}", "{app: reviews, version: v2}"))
    assert any("one version of reviews; meshc security policies are per service" in m for m in messages(result))


def test_route_to_an_external_service(tmp_path: Path) -> None:
    result = run(tmp_path, """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  http:
    - timeout: 3s
      retries: {attempts: 2}
      route: [{destination: {host: api.example.com}}]
""")
    assert not result.problems, messages(result)
    assert one(result, "Route") == {"kind": "Route", "service": "api-example-com", "rules": [
        {"to": {"default": 100}, "timeout": "3s", "retries": {"attempts": 2, "non_idempotent": True}}]}
    assert "kind: Route" in result.files["external.yaml"]
    write_files(result.files, tmp_path / "out")
    diags, view = check_policies(tmp_path / "out")
    assert view is not None, [str(d.message) for d in diags]


def test_sidecar_precedence(tmp_path: Path) -> None:
    """A workload's own Sidecar wins over its namespace's, which wins over the root namespace's."""
    sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {n}, namespace: {ns}}}\nspec:\n{sel}" \
              "  egress: [{{hosts: [{hosts}]}}]\n"
    result = run(tmp_path, "---\n".join([
        sidecar.format(n="root", ns="istio-system", sel="", hosts='"./*"'),
        sidecar.format(n="own", ns="default", sel="  workloadSelector: {labels: {app: reviews}}\n",
                       hosts='"istio-system/*"'),
    ]))
    assert not result.problems, messages(result)
    assert "calls" not in one(result, "Service", "reviews")  # its own Sidecar lists nothing of the mesh
    assert one(result, "Service", "ratings")["calls"] == ["reviews"]  # the root Sidecar: its namespace


def test_sidecar_without_egress_inherits(tmp_path: Path) -> None:
    """A Sidecar without `egress` (a root one setting only outboundTrafficPolicy, or a workload's own) inherits
    the next one's egress, as Istio does: it narrows no service's calls."""
    result = run(tmp_path, """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: own, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
""")
    assert not result.problems, messages(result)
    assert one(result, "Mesh")["egress"] == {"undeclared": "refuse"}
    assert one(result, "Service", "reviews")["calls"] == ["ratings"]  # every other service, as without a Sidecar
    assert one(result, "Service", "ratings")["calls"] == ["reviews"]


# ---------------------------------------------------------------- callers: sourceLabels, sourceNamespace, gateways

def ratings_vs(match: str, then: str = "") -> str:
    """A VirtualService for ratings (called by reviews, which has versions v1 and v2) with one match."""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings}}
spec:
  hosts: [ratings]
  http:
    - match: [{match}]
      route: [{{destination: {{host: ratings}}}}]
      timeout: 2s
    - route: [{{destination: {{host: ratings}}}}]
{then}"""


def built_clean(result, tmp_path: Path) -> None:
    """The import's output passes meshc check's checks and builds (sidecar configs and manifests)."""
    write_files(result.files, tmp_path / "built")
    built = build(tmp_path / "built")
    errors = [f"{d.source}: {d.code} {d.message}" for d in built.diagnostics if d.is_error]
    assert built.ok and not errors, errors


def callers_of_first_rule(result) -> list:
    return one(result, "Route", "ratings")["rules"][0]["match"]["callers"]


def test_source_labels_of_some_versions(tmp_path: Path) -> None:
    result = run(tmp_path, ratings_vs("{sourceLabels: {app: reviews, version: v2}, headers: {x-a: {exact: '1'}}}"))
    assert not result.problems, messages(result)
    assert one(result, "Route", "ratings")["rules"][0]["match"] == {
        "callers": [{"service": "reviews", "versions": ["v2"]}], "headers": [{"name": "x-a", "exact": "1"}]}
    assert "# callers from sourceLabels app=reviews, version=v2 (istio.yaml:8): reviews v2 (Deployment " \
           "reviews-v2; its sidecar reads the pod's version label)" in result.files["ratings.yaml"]
    built_clean(result, tmp_path)


@pytest.mark.parametrize("labels", ["{app: reviews}", "{version: v1}", "{version: v2}"])
def test_source_labels_of_a_whole_service(tmp_path: Path, labels: str) -> None:
    """Labels on every Deployment of reviews are reviews (any version); `version: v1` picks reviews v1 only
    when ratings, the callee itself, is left aside: here reviews has v1 and v2, so only v2 is partial."""
    result = run(tmp_path, ratings_vs(f"{{sourceLabels: {labels}}}"))
    assert not result.problems, messages(result)
    want = {"{app: reviews}": ["reviews"], "{version: v1}": [{"service": "reviews", "versions": ["v1"]}],
            "{version: v2}": [{"service": "reviews", "versions": ["v2"]}]}[labels]
    assert callers_of_first_rule(result) == want
    built_clean(result, tmp_path)


def test_source_labels_of_a_service_without_deployments(tmp_path: Path) -> None:
    """ratings has no Deployment in the input: its pods have at least its Service's selector labels."""
    result = run(tmp_path, vs("- match: [{sourceLabels: {app: ratings}}]\n"
                              "  route: [{destination: {host: reviews, subset: v2}}]\n"
                              "- route: [{destination: {host: reviews, subset: v1}}]"))
    assert not result.problems, messages(result)
    assert one(result, "Route", "reviews")["rules"][0] == {"match": {"callers": ["ratings"]}, "to": {"v2": 100}}
    built_clean(result, tmp_path)


def test_source_labels_subset_names_are_the_versions(tmp_path: Path) -> None:
    """With DestinationRule subsets, a caller's versions are the subsets its pods' labels fall in."""
    result = run(tmp_path, ratings_vs("{sourceLabels: {version: v2}}", "---" + dr(
        "subsets: [{name: stable, labels: {version: v1}}, {name: canary, labels: {version: v2}}]")))
    assert not result.problems, messages(result)
    assert callers_of_first_rule(result) == [{"service": "reviews", "versions": ["canary"]}]
    built_clean(result, tmp_path)


GATEWAY_TO_RATINGS = """
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: ["*"]
  gateways: [ingress]
  http: [{route: [{destination: {host: ratings}}]}]
"""


def test_source_labels_of_the_ingress_gateway_pods(tmp_path: Path) -> None:
    bound = ratings_vs("{sourceLabels: {istio: ingressgateway}}", GATEWAY_TO_RATINGS.split("---\napiVersion: "
                       "networking.istio.io/v1\nkind: VirtualService")[0])
    result = run(tmp_path, bound.replace("  hosts: [ratings]\n", "  hosts: [ratings]\n  gateways: [ingress, mesh]\n"))
    assert not result.problems, messages(result)
    assert callers_of_first_rule(result) == ["ingress"]
    assert "Gateway ingress (its Istio Gateway selects the pods labelled istio=ingressgateway)" in \
        result.files["ratings.yaml"]
    built_clean(result, tmp_path)


def test_source_namespace_is_its_services_and_gateways_that_call(tmp_path: Path) -> None:
    result = run(tmp_path, ratings_vs("{sourceNamespace: default}", GATEWAY_TO_RATINGS))
    assert not result.problems, messages(result)
    rules = one(result, "Route", "ratings")["rules"]
    assert rules[0] == {"match": {"callers": ["ingress"]}, "to": {"default": 100}}  # the gateway's own VirtualService
    assert rules[1]["match"]["callers"] == ["reviews"]  # Istio applies a mesh VirtualService at sidecars only
    assert "(the Services and Gateways in namespace default that call ratings); left out: Gateway ingress: the " \
           "VirtualService is not bound to it" in result.files["ratings.yaml"]
    built_clean(result, tmp_path)


def test_source_labels_of_the_gateway_pods_in_a_mesh_virtual_service(tmp_path: Path) -> None:
    result = run(tmp_path, ratings_vs("{sourceLabels: {istio: ingressgateway}}", GATEWAY_TO_RATINGS))
    assert any("Gateway ingress: the VirtualService is not bound to it (Istio applies it at sidecars only)" in m
               for m in messages(result)), messages(result)


def test_source_labels_and_namespace_together(tmp_path: Path) -> None:
    result = run(tmp_path, ratings_vs("{sourceLabels: {app: reviews}, sourceNamespace: shop}"))
    assert messages(result) == [
        "istio.yaml:8:15: VirtualService ratings: spec.http[0].match[0]: this match is left out as a whole (a "
        "condition of it is not imported)",
        "istio.yaml:8:16: VirtualService ratings: spec.http[0].match[0].sourceLabels: sourceLabels app=reviews and "
        "sourceNamespace shop: no Deployment or Gateway in namespace shop has these labels: the rule would match no "
        "call to ratings (a Route rule's callers are Services and Gateways that call it)"]
    assert one(result, "Route", "ratings")["rules"] == [{"to": {"default": 100}}]  # the match is left out


SIDECAR_REVIEWS_CALLS_NOTHING = """
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress: [{hosts: ["istio-system/*"]}]
"""


@pytest.mark.parametrize("match, then, message", [
    ("{sourceLabels: {app: nobody}}", "",
     "sourceLabels app=nobody: no Deployment or Gateway the import read has these labels: the rule would match no "
     "call to ratings"),
    ("{sourceLabels: {app: reviews}}", SIDECAR_REVIEWS_CALLS_NOTHING,
     "sourceLabels app=reviews: reviews does not call ratings: the rule would match no call to ratings"),
    ("{sourceNamespace: shop}", "",
     "sourceNamespace shop: no Service or Gateway the import read is in namespace shop: the rule would match no call"),
    ("{sourceNamespace: default}", SIDECAR_REVIEWS_CALLS_NOTHING,
     "sourceNamespace default: reviews does not call ratings: the rule would match no call to ratings"),
    ("{sourceLabels: {istio: ingressgateway}}", GATEWAY_TO_RATINGS.replace("host: ratings", "host: reviews"),
     "sourceLabels istio=ingressgateway: Gateway ingress routes nothing to ratings: the rule would match no call"),
    ("{sourceLabels: x}", "", "spec.http[0].match[0].sourceLabels: labels as a map of label name to value"),
    ("{gateways: [ingress]}", "", "gateways ingress: no Gateway of these names routes to it"),
    ("{gateways: [mesh]}", SIDECAR_REVIEWS_CALLS_NOTHING,
     "gateways mesh: reviews does not call ratings: the rule would match no call to ratings"),
])
def test_callers_unsupported(tmp_path: Path, match: str, then: str, message: str) -> None:
    """A match that selects no caller of the service is left out (listed), never imported as matching all."""
    result = run(tmp_path, ratings_vs(match, then))
    assert any(message in m for m in messages(result)), messages(result)
    assert any("this match is left out as a whole" in m for m in messages(result)), messages(result)
    assert len(one(result, "Route", "ratings")["rules"]) == 1


def test_source_labels_of_some_pods_of_a_service_without_versions(tmp_path: Path) -> None:
    k8s = K8S + "".join(f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ratings-{n}}}
spec:
  template:
    metadata: {{labels: {{app: ratings, track: {n}}}}}
    spec: {{containers: [{{name: app, ports: [{{containerPort: 8080}}]}}]}}
""" for n in ("a", "b"))
    result = run(tmp_path, vs("- match: [{sourceLabels: {track: a}}]\n"
                              "  route: [{destination: {host: reviews, subset: v2}}]"), k8s)
    assert any("sourceLabels track=a: they select only some pods of ratings (Deployment ratings-a), which has no "
               "versions to name them by: meshc callers are services and their versions" in m
               for m in messages(result)), messages(result)


def test_match_gateways(tmp_path: Path) -> None:
    """A match's own `gateways`: a gateway's name -> that Gateway as the caller (the rule applies to its calls);
    `mesh` -> every Service that calls (no Gateway), not written when no Gateway routes to the service."""
    istio = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings}}
spec:
  hosts: [ratings]
  gateways: [ingress, mesh]
  http:
    - match: [{{gateways: [ingress], headers: {{x-a: {{exact: "1"}}}}}}]
      route: [{{destination: {{host: ratings}}}}]
    - match: [{{gateways: [mesh], uri: {{prefix: /a}}}}]
      route: [{{destination: {{host: ratings}}}}]
    - route: [{{destination: {{host: ratings}}}}]
---{GATEWAY_TO_RATINGS.split("---")[1]}"""
    result = run(tmp_path, istio)
    assert not result.problems, messages(result)  # the header match at the gateway: the Route's rule for ingress
    rules = one(result, "Route", "ratings")["rules"]
    assert [r.get("match", {}).get("callers") for r in rules] == [["ingress"], ["reviews"], None]
    assert one(result, "Gateway")["routes"] == [{"hosts": ["ratings"], "to": "ratings"}]  # http[1]: not ingress's
    built_clean(result, tmp_path)
    alone = run(tmp_path, ratings_vs("{gateways: [mesh], uri: {prefix: /a}}"))  # no Gateway: every caller
    assert not alone.problems, messages(alone)
    assert one(alone, "Route", "ratings")["rules"][0]["match"] == {"path": {"prefix": "/a"}}
    assert "gateways mesh (istio.yaml:8): every caller of ratings (no Gateway routes to it): no callers needed" in \
        alone.files["ratings.yaml"]


# ---------------------------------------------------------------- importing again into the same folder

def test_reimport_removes_the_earlier_imports_stale_files(tmp_path: Path, capsys) -> None:
    from compiler.importer.write import RECORD

    out = tmp_path / "out"
    (tmp_path / "in.yaml").write_text(textwrap.dedent(K8S))
    assert main(["import", "istio", str(tmp_path / "in.yaml"), "-o", str(out)]) == 0
    (out / "notes.md").write_text("mine")  # the user's own files are never touched
    (out / "extra.yaml").write_text("kind: Mesh\nname: x\n")
    (out / "extra.yaml").unlink()
    (tmp_path / "in.yaml").write_text(textwrap.dedent(K8S).split("---\napiVersion: v1\nkind: Service\n"
                                                                  "metadata: {name: ratings}")[0])
    capsys.readouterr()
    assert main(["import", "istio", str(tmp_path / "in.yaml"), "-o", str(out)]) == 0
    assert "removed 1 file(s) of the earlier import that this one does not write: ratings.yaml" in \
        capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [RECORD, "mesh.yaml", "notes.md", "reviews.yaml"]
    assert main(["check", str(out)]) == 0


@pytest.mark.parametrize("change, message", [
    (lambda out: (out / "ratings.yaml").write_text((out / "ratings.yaml").read_text() + "# mine\n"),
     "ratings.yaml: written by the earlier import and edited since; this import does not write it"),
    (lambda out: (out / "reviews.yaml").write_text((out / "reviews.yaml").read_text() + "# mine\n"),
     "reviews.yaml: edited since the import wrote it; this import would overwrite it"),
    (lambda out: (out / "old.yaml").write_text((out / "mesh.yaml").read_text()),
     "old.yaml: written by an earlier import that kept no record of its files"),
    (lambda out: (out / ".meshc-import").unlink(),
     "reviews.yaml: not written by `meshc import istio` (or by one that kept no record of its files)"),
])
def test_reimport_refuses_to_touch_edited_or_unrecorded_files(tmp_path: Path, capsys, change, message) -> None:
    out = tmp_path / "out"
    (tmp_path / "in.yaml").write_text(textwrap.dedent(K8S))
    assert main(["import", "istio", str(tmp_path / "in.yaml"), "-o", str(out)]) == 0
    change(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "in.yaml").write_text(textwrap.dedent(K8S).split("---\napiVersion: v1\nkind: Service\n"
                                                                  "metadata: {name: ratings}")[0])
    capsys.readouterr()
    assert main(["import", "istio", str(tmp_path / "in.yaml"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Nothing written: move or delete those files" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
