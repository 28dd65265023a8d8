"""A Hypothesis strategy of valid meshes over every feature of the policy language (Gateways, ExternalServices
and the Mesh's egress: edgeparts.py).

`meshes()` draws a `Drawn`: YAML documents (plain dicts) that the policy models accept and whose
references hold (routes name versions that exist, callers call services of the mesh, ...), with edge
values mixed in through `Gen.edge`. Such a mesh may still be refused by meshc's checks (a positioned
error is a fine answer); what it must never do is crash, or build and then be refused by Envoy.

A mesh runs either on one host (each service on its own loopback address 127.77.<k>.<i>) or in pods
(Kubernetes mode: the Mesh's wildcard address); the two are not mixed (E293 refuses calls between them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hypothesis import strategies as st

from fuzz.edgeparts import egress, externals, gateway
from fuzz.edges import TOKEN, Gen, rare, text
from fuzz.parts import count, dur, jwks, path, rule, weights
from fuzz.policyparts import authorization_policy, outlier, pool, traffic_policy


@dataclass
class Drawn:
    docs: list[dict]
    edges: set[str] = field(default_factory=set)

    def yaml(self) -> str:
        return yaml.safe_dump_all(self.docs, allow_unicode=True, sort_keys=False, width=10_000)

    def write(self, folder: Path) -> Path:
        """The mesh as one YAML file `mesh.yaml` in `folder` (real UTF-8, no escapes of non-ASCII)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mesh.yaml").write_text(self.yaml(), encoding="utf-8")
        return folder


def mesh_doc(g: Gen, in_pods: bool, names: list[str], grpc: list[str], http: list[str]) -> dict:
    m: dict = {"kind": "Mesh", "name": "fuzz"}
    defaults: dict = {}
    if g.bool():
        defaults["timeout"] = dur(g, "defaults-timeout")
    if g.bool():
        defaults["connect_timeout"] = dur(g, "connect-timeout")
    if g.bool():
        defaults["connection_pool"] = pool(g)
    if g.bool():
        defaults["outlier_detection"] = outlier(g)
    if defaults:
        m["defaults"] = defaults
    if g.bool():
        m["sidecar"] = {"outbound_port": g.draw(st.sampled_from([15001, 16001])),
                        "admin_port": g.draw(st.sampled_from([15000, 16000]))}
    if g.bool():
        m["config_dir"] = g.draw(st.sampled_from(["/etc/meshc", "/", "/a/b.c/d-e_f", "/" + "d" * 200]))
    if g.bool():
        m["trust_domain"] = g.edge("name.trust-domain", st.sampled_from(["cluster.local", "example.org", "a"]),
                                   st.just(".".join(["d" * 63] * 3) + "." + "d" * 61))  # 253 characters
    if g.bool():
        m["mtls"] = {"mode": g.draw(st.sampled_from(["strict", "permissive", "disable"]))}
        if g.bool():
            m["mtls"]["certs_dir"] = g.draw(st.sampled_from(["/etc/meshc/certs", "/certs"]))
    if g.bool():
        m["authorization"] = {"default": g.draw(st.sampled_from(["allow", "deny"]))}
    obs: dict = {}
    if g.bool():
        obs["metrics"] = {"port": 15090}
        if g.bool():
            obs["metrics"]["keep_prefixes"] = [text(g, "metrics.prefix", st.sampled_from(["cluster.", "http."]))]
    collectors = {"zipkin": http, "opentelemetry": grpc}
    provider = g.draw(st.sampled_from(["zipkin", "opentelemetry"]))
    if collectors[provider] and g.bool():
        tracing: dict = {"provider": provider, "collector": g.draw(st.sampled_from(collectors[provider])),
                         "sampling": g.draw(st.integers(0, 100))}
        if g.bool():
            tracing["tags"] = {text(g, "tracing.tag-key", TOKEN): text(g, "tracing.tag-value")}
        obs["tracing"] = tracing
    if g.bool():
        obs["access_log"] = access_log(g)
    if obs:
        m["observability"] = obs
    if g.bool():
        m["paths"] = {"escaped_slashes": g.draw(st.sampled_from(["reject", "redirect", "decode", "keep"])),
                      "case_sensitive": g.bool()}
    if in_pods:
        m["sidecar"] = {**m.get("sidecar", {}), "address": g.draw(st.sampled_from(["0.0.0.0", "::"]))}
        if g.bool():
            m["kubernetes"] = kubernetes(g)
    return m


def access_log(g: Gen) -> dict:
    log: dict = {"to": g.draw(st.sampled_from(["stdout", "file"])), "format": g.draw(st.sampled_from(["json", "text"])),
                 "only": g.draw(st.sampled_from(["all", "errors", "slow"]))}
    if log["to"] == "file":
        log["path"] = "/var/log/meshc/access.log"
    if log["only"] == "slow" and g.bool():
        log["slow_over"] = dur(g, "slow-over")
    return log


def kubernetes(g: Gen) -> dict:
    k: dict = {}
    if g.bool():
        k["cluster_domain"] = g.draw(st.sampled_from(["cluster.local", "k8s.example.org"]))
    refresh = g.draw(st.sampled_from([100, 1000, 5000]))
    k["dns_refresh"] = f"{refresh}ms"
    k["shutdown_grace"] = f"{(refresh + 10_000) // 1000 + g.draw(st.integers(1, 30))}s"
    if g.bool():
        k["image"] = g.draw(st.sampled_from(["envoyproxy/envoy:v1.40.0", "registry:5000/envoy@sha256:" + "a" * 64]))
    if g.bool():
        k["probe_port"] = 15021
    if g.bool():
        k["resources"] = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}
    if g.bool():
        k["certs_secret"] = "c-{service}"
    return k


def service_doc(g: Gen, i: int, name: str, protocol: str, calls: list[str], in_pods: bool, k: int) -> tuple[dict, list[str]]:
    s: dict = {"kind": "Service", "name": name, "port": g.draw(st.sampled_from([80, 8080, 9080, 65535])) - i}
    if protocol != "http" or g.bool():
        s["protocol"] = protocol
    versions: dict = {}
    for j in range(g.draw(st.integers(0, 3))):
        spec: dict = {}
        if j > 0 or g.draw(st.integers(0, 2)) == 0:  # several versions on the app port: E213 (the false one)
            spec["endpoints"] = g.draw(st.lists(st.sampled_from(
                [f"127.0.0.1:{30000 + 8 * i + j}", f"[::1]:{31000 + 8 * i + j}", f"b{i}-{j}.example:8080",
                 f"127.78.{k}.{8 * i + j + 1}:30003"]),
                min_size=1, max_size=2, unique=True))
        versions[g.edge("name.version", st.just(f"v{j + 1}"), st.just(f"v{j + 1}-" + "v" * 60))] = spec
    if versions:
        s["versions"] = versions
        if g.draw(st.integers(0, 3)) == 0:
            s["default_version"] = g.draw(st.sampled_from(list(versions)))
    if not versions or any(not v.get("endpoints") for v in versions.values()):
        s["app_port"] = 20000 + i
    if calls:
        s["calls"] = calls
    if g.draw(st.integers(0, 4)) == 0:
        s["namespace"] = g.draw(st.sampled_from(["default", "shop", "n" * 20, "n" * 63]))
    if g.draw(st.integers(0, 4)) == 0:
        s["service_account"] = g.draw(st.sampled_from(["sa", f"{name}-sa", "a" * 63]))
    if g.draw(st.integers(0, 6)) == 0:  # a strict one called by a disabled one: E240
        s["mtls"] = g.draw(st.sampled_from(["strict", "permissive", "disable"]))
    if not in_pods:
        s["sidecar"] = {"address": f"127.77.{k}.{i + 1}"}
    if g.draw(st.integers(0, 4)) == 0:
        part = g.draw(st.sampled_from(["metrics", "tracing", "access_log"]))
        s["observability"] = {part: False if part != "access_log" or g.bool() else access_log(g)}
    return s, list(versions) or ["default"]


def request_authentication(g: Gen, name: str) -> dict:
    providers = []
    for j in range(g.draw(st.integers(1, 2))):
        p: dict = {"name": f"p{j}", "issuer": text(g, "jwt.issuer", st.just("https://issuer.example")) or "i"}
        if g.draw(st.integers(0, 5)) == 0:
            p["jwks_file"] = "/etc/meshc/jwks.json"
        else:
            p["jwks"] = g.edge("jwt.jwks", st.builds(jwks), st.sampled_from(['{"keys": []}', '{"keys": [{}]}',
                                                                             '{"keys": [{"kty": "RSA", "n": "x"}]}']))
        if g.bool():
            p["audiences"] = [text(g, "jwt.audience", st.just("shop"))]
        if g.draw(st.integers(0, 2)) == 0:
            p["from_headers"] = [{"name": g.draw(TOKEN), "prefix": text(g, "jwt.token-prefix", st.sampled_from(["", "Bearer ", "Token "]))}]
        if g.draw(st.integers(0, 2)) == 0:
            p["from_params"] = [text(g, "jwt.from-param", TOKEN)]
        if g.draw(st.integers(0, 2)) == 0:
            p["forward_claims"] = {text(g, "jwt.claim-name", st.just("sub")): "x-" + g.draw(TOKEN)}
        if g.bool():
            p["forward_token"] = g.bool()
        providers.append(p)
    ra: dict = {"kind": "RequestAuthentication", "service": name, "providers": providers}
    if g.bool():
        ra["rules"] = [{"paths": [path(g, "jwt.rule-path")], "providers": [providers[0]["name"]], "allow_missing": g.bool()}]
    return ra


@st.composite
def meshes(draw, include_open: bool = True, only: str | None = None) -> Drawn:
    g = Gen(draw, include_open, only)
    k = draw(st.integers(0, 255))
    in_pods = draw(st.integers(0, 3)) == 0
    n = draw(st.integers(1, 4))
    protocols = [draw(st.sampled_from(["http", "http", "grpc", "tcp"])) for _ in range(n)]
    names = [g.edge("name.service", st.just(f"s{i}"), st.just(f"s{i}-" + "x" * 60)) for i in range(n)]  # 63: a DNS label
    grpc = [s for s, p in zip(names, protocols) if p == "grpc"]
    http = [s for s, p in zip(names, protocols) if p == "http"]
    services, versions = [], {}
    for i, name in enumerate(names):
        calls = draw(st.lists(st.sampled_from(names), max_size=n, unique=True)) if n > 1 else []
        calls = [c for c in calls if c != name]
        doc, versions[name] = service_doc(g, i, name, protocols[i], calls, in_pods, k)
        services.append(doc)
    docs = [mesh_doc(g, in_pods, names, grpc, http)] + services
    edge_docs, gw = edge(g, docs[0], services, names, protocols, grpc, in_pods, k)
    mirror_targets = [(None, v) for v in []]
    for name, protocol in zip(names, protocols):
        if protocol != "tcp" and draw(st.integers(0, 2)) == 0:
            mirror_targets = [(None, v) for v in versions[name]] + [
                (s, v) for s, p in zip(names, protocols) if s != name and p != "tcp" for v in versions[s]] + [
                (e["name"], "default") for e in edge_docs if e["kind"] == "ExternalService" and e.get("protocol") != "tcp"]
            callers = callers_of(name, services, edge_docs, in_pods and "kubernetes" in docs[0])
            rules = [rule(g, versions[name], mirror_targets, last=(j == last), callers=callers)
                     for last in [draw(st.integers(0, 3))] for j in range(last + 1)]
            route: dict = {"kind": "Route", "service": name, "rules": rules}
            if any("retries" in r for r in rules) and g.bool():
                route["retry_budget"] = {"percent": draw(st.integers(1, 100)),
                                         "min_concurrency": count(g, "retry-budget-min-concurrency", 1, 10)}
            docs.append(route)
        elif protocol == "tcp" and draw(st.integers(0, 2)) == 0:
            docs += tcp_canary(g, services[names.index(name)], in_pods)
        if draw(st.integers(0, 2)) == 0:
            docs.append(traffic_policy(g, name, protocol, grpc, versions[name]))
        jwt = protocol != "tcp" and draw(st.integers(0, 3)) == 0
        if jwt:
            docs.append(request_authentication(g, name))
        if draw(st.integers(0, 3)) == 0:
            mode = lambda s: s.get("mtls") or docs[0].get("mtls", {}).get("mode", "disable")
            callers = [s["name"] for s in services if s["name"] != name and mode(s) != "disable"] + ([gw] if gw else [])
            spaces, addresses = namespaces_and_addresses(g, services, edge_docs)
            mtls = mode(services[names.index(name)]) != "disable"
            docs.append(authorization_policy(g, name, callers if mtls else [], spaces if mtls else [], addresses,
                                             protocol, jwt))
    return Drawn(docs + edge_docs, g.used)


def tcp_canary(g: Gen, service: dict, in_pods: bool) -> list[dict]:
    """A Route for a tcp service: one rule, weights per connection. In pods only versions without endpoints of
    their own (a caller reaches a version by its headless Service: E229 otherwise, now and then); now and then
    a second rule or a request field (E208)."""
    versions = service.get("versions") or {"default": {}}
    pods = [v for v, spec in versions.items() if not spec.get("endpoints")]
    choices = pods if in_pods and not rare(g, 15) else list(versions)
    if not choices:
        return []
    r: dict = {"to": weights(g, choices)}
    if rare(g, 23):
        key = g.draw(st.sampled_from(["timeout", "match"]))
        r[key] = "1s" if key == "timeout" else {"path": {"prefix": "/"}}
    rules = [r] + ([{"to": {choices[0]: 100}}] if rare(g, 31) else [])
    return [{"kind": "Route", "service": service["name"], "rules": rules}]


def callers_of(name: str, services: list[dict], edge_docs: list[dict], in_pods: bool) -> list[tuple[str, list[str]]]:
    """Who calls `name`, for `match.callers`: services that list it in `calls` (with the versions a rule may
    name: in pods with the Mesh's `kubernetes` settings those that have pods, else none) and gateways that
    route to it."""
    out = [(s["name"], [v for v, spec in (s.get("versions") or {}).items() if in_pods and not spec.get("endpoints")])
           for s in services if name in s.get("calls", [])]
    return out + [(d["name"], []) for d in edge_docs
                  if d["kind"] == "Gateway" and any(r["to"] == name for r in d.get("routes", []))]


def namespaces_and_addresses(g: Gen, services: list[dict], edge_docs: list[dict]) -> tuple[list[str], list[str]]:
    """The namespaces of the mesh's services and gateways (and one no one is in: W247), and their sidecars'
    and gateways' loopback addresses (none in pods), for authorization rules."""
    sides = services + [d for d in edge_docs if d["kind"] == "Gateway"]
    spaces = sorted({d.get("namespace", "default") for d in sides}) + (["elsewhere"] if rare(g, 7) else [])
    addresses = [d["sidecar"]["address"] if "sidecar" in d else d.get("address", "") for d in sides]
    return spaces, [a for a in addresses if a.count(".") == 3 and a != "0.0.0.0"]


def edge(g: Gen, mesh: dict, services: list[dict], names: list[str], protocols: list[str], grpc: list[str], in_pods: bool,
         k: int) -> tuple[list[dict], str | None]:
    """ExternalServices (with Mesh egress) in a third of the meshes, Gateways (one or two) in about half (edgeparts.py)."""
    docs: list[dict] = externals(g, services, grpc, in_pods) if g.draw(st.integers(0, 2)) == 0 else []
    if docs or g.draw(st.integers(0, 3)) == 0:
        mesh["egress"] = egress(g)
    gws: list[str] = []
    for n_gw in range(g.draw(st.sampled_from([0, 0, 1, 1, 2]))):  # the second on ports of its own, or not (E514)
        gw, more = gateway(g, names, protocols, in_pods, k, [d["name"] for d in docs if d["kind"] == "ExternalService"], n_gw)
        gws.append(gw)
        docs += more
    return docs, gws[0] if gws else None
