"""Parts of a generated mesh at its edge (issue 13): Gateways, ExternalServices and the Mesh's egress.

`externals()` draws ExternalServices (http, grpc or tcp; TLS origination with CA, SNI and minimum version; fixed
endpoints by IP or by name, or DNS), adds them to some services' `calls`, and sometimes a Route or a
TrafficPolicy on them. `gateway()` draws one Gateway (http and https listeners, a redirect to https, several
certificates with wildcard hosts, client CA, routes by host, path and listener, limits, trusted hops, a rate
limit, observability) and sometimes a RequestAuthentication naming it. Risky values go through `Gen.edge`
(tags `gateway.*`, `external.*`), so that the fuzz explores what Envoy might refuse.
"""

from __future__ import annotations

from hypothesis import strategies as st

from fuzz.edges import UINT32_MAX, Gen, rare
from fuzz.parts import count, dur, rate_limit, rule
from fuzz.policyparts import traffic_policy

HOSTS = ["shop.example.com", "api.example.com", "*.api.example.com", "*.example.com", "a.b", "x"]
ODD_HOSTS = ["a" * 63 + ".example", ".".join(["h" * 63] * 3) + "." + "h" * 61, "*.a", "localhost", "1.2.3.4",
             "xn--caf-dma.example", "0", "*." + ".".join(["w" * 63] * 3) + "." + "w" * 59]
"""A 63-character label, 253 characters in all, a wildcard over a one-label name, digits only, punycode."""

ODD_FILES = ["/..", "//x", "/a/./b", "/a/../b", "/" + "p" * 4000, "/-", "/tls.crt", "/" + "d/" * 200 + "f"]
"""Paths the model accepts (absolute, safe characters) that a file watcher may trip on."""

ODD_ROUTE_PATHS = ["/%", "/%zz", "/a?b=c", "/a#b", "/" + "p" * 5000, "/\\", "//", "/..", "/a/%2F", "/*", "/{x}",
                   "/'\"", "/~", "/a;b"]


def file_path(g: Gen, tag: str, safe: str) -> str:
    return g.edge(f"{tag}", st.just(safe), st.sampled_from(ODD_FILES))


def hostname(g: Gen, tag: str, safe: st.SearchStrategy) -> str:
    return g.edge(tag, safe, st.sampled_from(ODD_HOSTS))


# -- ExternalService ---------------------------------------------------------------------------------------

def external_doc(g: Gen, i: int, in_pods: bool, mesh_names: list[str]) -> dict:
    name = g.edge("external.name", st.just(f"e{i}"), st.just(f"e{i}-" + "e" * 60))
    host = hostname(g, "external.host", st.sampled_from([f"api{i}.ext.example", f"e{i}.partner.example"]))
    if mesh_names and rare(g, 15):  # a mesh service's name as host: E522
        host = g.draw(st.sampled_from(mesh_names))
    protocol = g.draw(st.sampled_from(["http", "http", "grpc", "tcp"]))
    ports = [443, 8443, 80, 9000 + i] if protocol != "tcp" else [5432 + i, 9000 + i]  # tcp: a listener each
    e: dict = {"kind": "ExternalService", "name": name, "host": host,
               "port": g.edge("external.port", st.sampled_from(ports), st.sampled_from([1, 443, 65535, 15001, 15000, 15090]))}
    if protocol != "http" or g.bool():
        e["protocol"] = protocol
    if g.draw(st.integers(0, 2)):
        tls: dict = {"ca": file_path(g, "external.tls-ca", f"/etc/meshc/external/{name}/ca.pem")}
        if g.bool() or host[0].isdigit():
            tls["sni"] = hostname(g, "external.tls-sni", st.sampled_from([f"api{i}.ext.example", "sni.example"]))
        if g.bool():
            tls["min_version"] = g.draw(st.sampled_from(["1.2", "1.3"]))
        e["tls"] = tls
    kind = g.draw(st.sampled_from(["dns", "ip", "name", "mixed"]))
    port = e["port"]
    ips = [f"192.0.2.{10 + i}:{port}", f"[2001:db8::{i + 1}]:{port}", f"198.51.100.{i + 1}:8443"]
    if not in_pods or rare(g, 7):  # from a pod, loopback is the pod itself: E533
        ips.append(f"127.0.0.1:{31500 + i}")
    names = [f"n{i}.partner.example:{port}", f"m{i}.partner.example:443"]
    pool = {"ip": ips, "name": names, "mixed": ips + names}.get(kind)
    if pool:
        e["endpoints"] = g.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        if rare(g, 11):
            g.used.add("external.endpoint-odd")
            e["endpoints"].append(g.draw(st.sampled_from(["[::1]:1", "0.0.0.0:80", "255.255.255.255:65535",
                                                          "[::]:443", "h" * 63 + ".example:443"])))
    return e


def externals(g: Gen, services: list[dict], grpc: list[str], in_pods: bool) -> list[dict]:
    """ExternalServices called by some of `services` (their `calls` are extended), with Routes and TrafficPolicies."""
    names = [s["name"] for s in services]
    docs: list[dict] = []
    for i in range(g.draw(st.integers(1, 3))):
        e = external_doc(g, i, in_pods, names)
        docs.append(e)
        callers = g.draw(st.lists(st.sampled_from(services), min_size=0 if rare(g, 7) else 1,
                                  max_size=len(services), unique_by=lambda s: s["name"]))
        for s in callers:
            s["calls"] = list(s.get("calls", [])) + [e["name"]]
        protocol = e.get("protocol", "http")
        if protocol != "tcp" and g.draw(st.integers(0, 2)) == 0:
            rules = [rule(g, ["default"], [(None, "default")], last=(j == last), callers=[(s["name"], []) for s in callers])
                     for last in [g.draw(st.integers(0, 2))] for j in range(last + 1)]
            route: dict = {"kind": "Route", "service": e["name"], "rules": rules}
            if any("retries" in r for r in rules) and g.bool():
                route["retry_budget"] = {"percent": g.draw(st.integers(1, 100)), "min_concurrency": g.draw(st.integers(1, 10))}
            docs.append(route)
        if g.draw(st.integers(0, 2)) == 0:
            tp = traffic_policy(g, e["name"], protocol, grpc, external=True)
            if not rare(g, 7):  # inbound-only settings on an external: E525, now and then
                for key in ("rate_limit", "global_rate_limit", "health_check"):
                    tp.pop(key, None)
            docs.append(tp)
    return docs


def egress(g: Gen) -> dict:
    return {"undeclared": g.draw(st.sampled_from(["refuse", "allow"]))}


# -- Gateway ------------------------------------------------------------------------------------------------

def certificate(g: Gen, gw: str, j: int, used: set[str]) -> dict:
    hosts = g.draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=3, unique=True))
    if not rare(g, 5):
        hosts = [h for h in hosts if h not in used] or [f"c{j}.{gw}.example"]  # a host on two certificates: E506
    if rare(g, 11):
        g.used.add("gateway.cert-host")
        hosts.append(g.draw(st.sampled_from([h for h in ODD_HOSTS if h not in hosts])))
    used.update(hosts)
    return {"hosts": hosts, "cert": file_path(g, "gateway.cert-file", f"/etc/meshc/edge/{gw}/c{j}/tls.crt"),
            "key": file_path(g, "gateway.key-file", f"/etc/meshc/edge/{gw}/c{j}/tls.key")}


def listener(g: Gen, gw: str, j: int, https: bool, redirect: bool, base: int = 0) -> dict:
    port = g.edge("gateway.port", st.sampled_from([base + 8080 + j, base + 8443 + j, base + 10080 + j]),
                  st.sampled_from([1, 80, 443, 65535, 15000, 15001, 15090]))
    lst: dict = {"name": g.edge("gateway.listener-name", st.just(f"l{j}"), st.just(f"l{j}-" + "l" * 60)), "port": port}
    if https:
        lst["protocol"] = "https"
        used: set[str] = set()
        tls: dict = {"certificates": [certificate(g, gw, n, used) for n in range(g.draw(st.integers(1, 3)))]}
        if g.bool():
            tls["min_version"] = g.draw(st.sampled_from(["1.2", "1.3"]))
        if g.draw(st.integers(0, 2)) == 0:
            tls["client_ca"] = file_path(g, "gateway.client-ca", f"/etc/meshc/edge/{gw}/client-ca.pem")
        lst["tls"] = tls
    elif g.bool():
        lst["protocol"] = "http"
    if redirect:
        lst["redirect_to_https"] = True
    return lst


def limits(g: Gen) -> dict:
    out: dict = {}
    if g.bool():
        out["max_connections"] = count(g, "gateway.max_connections", 1, 100_000)
    if g.bool():
        out["max_request_headers_kb"] = g.edge("gateway.max_request_headers_kb", st.integers(8, 96),
                                               st.sampled_from([1, 95, 96, 97, 8191, 8192]))
    if g.bool():
        out["max_headers"] = g.edge("gateway.max_headers", st.integers(10, 200), st.sampled_from([1, 2, 65535]))
    if g.bool():
        out["max_request_bytes"] = count(g, "gateway.max_request_bytes", 1, 10_000_000)
    for key in ("request_headers_timeout", "request_timeout", "stream_idle_timeout", "idle_timeout"):
        if g.bool():
            out[key] = dur(g, f"gateway.{key}")
    return out


def observability(g: Gen, names: list[str], protocols: list[str], ports: list[int]) -> dict:
    """The gateway's own metrics (sometimes on a listener's port: E515), tracing (to a mesh service) or access log."""
    part = g.draw(st.sampled_from(["metrics", "tracing", "access_log"]))
    if g.draw(st.integers(0, 2)) == 0:
        return {part: False}
    if part == "metrics":
        return {"metrics": {"port": g.edge("gateway.metrics-port", st.just(15090), st.sampled_from(ports + [15000]))}}
    collectors = {"zipkin": [n for n, p in zip(names, protocols) if p == "http"],
                  "opentelemetry": [n for n, p in zip(names, protocols) if p == "grpc"]}
    provider = g.draw(st.sampled_from(sorted(collectors)))
    if part == "tracing" and collectors[provider]:
        return {"tracing": {"provider": provider, "collector": g.draw(st.sampled_from(collectors[provider])),
                            "sampling": g.draw(st.integers(0, 100))}}
    return {"access_log": {"to": "stdout", "format": g.draw(st.sampled_from(["json", "text"]))}}


def gateway(g: Gen, names: list[str], protocols: list[str], in_pods: bool, k: int,
            externals: list[str], n_gw: int = 0) -> tuple[str, list[dict]]:
    """A Gateway routing to the mesh's http and grpc services, and maybe its RequestAuthentication."""
    from fuzz.meshgen import request_authentication

    gw = g.edge("gateway.name", st.just(f"gw{n_gw or ''}"), st.just(f"gw{n_gw}-" + "g" * 59))
    n = g.draw(st.integers(1, 3))
    kinds = [g.draw(st.sampled_from(["http", "https", "https"])) for _ in range(n)]
    has_https = "https" in kinds
    lsts = [listener(g, gw, j, kind == "https",
                     redirect=kind == "http" and (has_https or rare(g, 7)) and g.bool(),
                     base=100 * n_gw if not rare(g, 3) else 0)
            for j, kind in enumerate(kinds)]
    doc: dict = {"kind": "Gateway", "name": gw}
    if g.bool():
        doc["namespace"] = g.draw(st.sampled_from(["edge", "default", "n" * 63]))
    if g.bool():
        doc["service_account"] = g.draw(st.sampled_from(["ingress", f"{gw}-sa", "a" * 63]))
    if in_pods:
        if g.bool():
            doc["address"] = g.draw(st.sampled_from(["0.0.0.0", "::"]))
        if g.bool():
            doc["replicas"] = g.edge("gateway.replicas", st.integers(1, 4), st.sampled_from([2**31 - 1, 2**31, 2**63]))
    else:
        doc["address"] = g.edge("gateway.address", st.just(f"127.77.{k}.{250 + n_gw}"), st.sampled_from(["127.0.0.1", "::1"]))
    if g.draw(st.integers(0, 3)) == 0:
        doc["admin_port"] = g.draw(st.sampled_from([15000, 16500, 19000]))
    doc["listeners"] = lsts
    served = [lst["name"] for lst in lsts if not lst.get("redirect_to_https")]
    targets = [s for s, p in zip(names, protocols) if p != "tcp"]
    if rare(g, 9):  # a tcp service, an ExternalService: E508
        targets = names + externals
    routes = []
    for _ in range(g.draw(st.integers(0 if not targets else 1, 4)) if targets else 0):
        r: dict = {"to": g.draw(st.sampled_from(targets))}
        if g.bool():
            r["hosts"] = g.draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2, unique=True))
            if rare(g, 11):
                g.used.add("gateway.route-host")
                r["hosts"] = sorted(set(r["hosts"]) | {g.draw(st.sampled_from(ODD_HOSTS))})
        if g.bool():
            r["path"] = g.edge("gateway.route-path", st.sampled_from(["/", "/api", "/api/", "/shop/v1"]),
                               st.sampled_from(ODD_ROUTE_PATHS))
        if served and g.draw(st.integers(0, 2)) == 0:
            r["listeners"] = g.draw(st.lists(st.sampled_from(served), min_size=1, max_size=len(served), unique=True))
        same = [o for o in routes if (o.get("hosts"), o.get("path", "/")) == (r.get("hosts"), r.get("path", "/"))]
        if not same or rare(g, 7):  # the same hosts and path twice: E511
            routes.append(r)
    if routes:  # the specific first, as one writes them; now and then as drawn (a route shadowed: E511)
        doc["routes"] = routes if rare(g, 7) else sorted(
            routes, key=lambda r: (not r.get("hosts"), any(h.startswith("*") for h in r.get("hosts", [])),
                                   -len(r.get("path", "/"))))
    if g.bool():
        doc["trusted_hops"] = g.edge("gateway.trusted_hops", st.integers(0, 3), st.sampled_from([UINT32_MAX, 2**32, 2**64]))
    if g.bool():
        doc["limits"] = limits(g)
    if g.draw(st.integers(0, 2)) == 0:
        doc["rate_limit"] = rate_limit(g)
    if g.draw(st.integers(0, 3)) == 0:
        doc["observability"] = observability(g, names, protocols, [lst["port"] for lst in lsts])
    docs = [doc]
    if g.draw(st.integers(0, 2)) == 0:
        docs.append(request_authentication(g, gw))
    return gw, docs

