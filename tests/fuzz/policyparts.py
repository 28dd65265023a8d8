"""Parts of a generated mesh's per-service policies (used by meshgen.py and edgeparts.py).

- `traffic_policy()`: a TrafficPolicy: connection pool (limits, requests per connection, idle timeout, TCP
  keepalive, upstream HTTP version), outlier detection, load balancer, health check, rate limits, WebSocket
  upgrades, and per-version settings (`versions:`, Istio's subset trafficPolicy);
- `authorization_policy()`: allow/deny rules on the caller (`from`, `namespaces`, `ip_blocks` and their `not_`
  forms) and on the request (paths, methods and their `not_` forms, headers, claims).

What the checker refuses on purpose is drawn now and then (`rare`): HTTP-only settings on a tcp service (E234),
http1 to a grpc service (E238), WebSockets over HTTP/2 (E239), a version the service does not have (E237),
request conditions on a tcp service (E245). Risky values go through `Gen.edge` (tags `pool.*`, `keepalive.*`,
`authz.*`), so that the fuzz explores what Envoy might refuse.
"""

from __future__ import annotations

from hypothesis import strategies as st

from fuzz.edges import EDGE_NON_NEGATIVE, EMOJI, TOKEN, UINT32_MAX, Gen, rare, regex, text
from fuzz.parts import METHODS, count, dur, header_match, path, rate_limit

HASHING = ("ring_hash", "maglev")
BALANCERS = ["round_robin", "least_request", "random", "ring_hash", "maglev"]


# -- TrafficPolicy -----------------------------------------------------------------------------------------

def whole_seconds(g: Gen, tag: str) -> str:
    """A keepalive time: whole seconds (Envoy counts them in uint32); risky: 0, milliseconds, beyond uint32."""
    return g.edge(f"keepalive.{tag}", st.sampled_from(["1s", "10s", "75s", "1m", "2h"]),
                  st.sampled_from(["0s", "1500ms", "999ms", f"{UINT32_MAX}s", f"{UINT32_MAX + 1}s", "1193046h"]))


def keepalive(g: Gen) -> dict:
    out: dict = {}
    if g.bool():
        out["probes"] = count(g, "keepalive.probes", 1, 20)
    for key in ("time", "interval"):
        if g.bool():
            out[key] = whole_seconds(g, key)
    return out


def pool(g: Gen, protocol: str | None = None, websockets: bool = False) -> dict:
    """A connection pool. `protocol` None (the Mesh's defaults, which apply to every service) draws every
    field; for a tcp service the HTTP-only ones only rarely (E234), for grpc http1 only rarely (E238), and with
    WebSockets http2 only rarely (E239)."""
    keys = ["max_connections", "max_pending_requests", "max_requests", "max_retries"]
    out: dict = {k: count(g, f"pool.{k}") for k in keys if g.bool()}
    http = protocol != "tcp" or rare(g, 31)
    with g.rarely():
        if http and g.draw(st.integers(0, 2)) == 0:
            out["max_requests_per_connection"] = count(g, "pool.max_requests_per_connection", 1, 1000)
        if http and g.draw(st.integers(0, 2)) == 0:
            out["idle_timeout"] = dur(g, "pool.idle-timeout")
        if g.draw(st.integers(0, 2)) == 0:
            out["tcp_keepalive"] = keepalive(g)
    if http and g.draw(st.integers(0, 2)) == 0:
        # http2 from the Mesh's defaults meets every service's WebSockets (E239): now and then only
        choices = (["http2", "client"] if protocol == "grpc" else ["http1", "client"] if websockets or protocol is None
                   else ["http1", "http2", "client"])
        wrong = "http2" if websockets or protocol is None else "http1"  # E239; for grpc E238 (http: fine)
        out["upstream_protocol"] = wrong if rare(g, 15) else g.draw(st.sampled_from(choices))
    return out


def outlier(g: Gen) -> dict:
    out: dict = {}
    for key in ("consecutive_5xx", "consecutive_gateway_errors"):
        if g.bool():
            out[key] = g.edge(f"uint32.outlier.{key}", st.integers(0, 20), EDGE_NON_NEGATIVE)
    if g.draw(st.integers(0, 3)) == 0:
        out["success_rate"] = {k: count(g, f"success-rate.{k}", 1, 2000)
                               for k in ("min_hosts", "request_volume", "stdev_factor") if g.bool()}
    if g.bool():
        out["interval"] = dur(g, "outlier-interval")
    if g.bool():
        out["base_ejection_time"] = dur(g, "outlier-base-ejection")
    if g.bool():
        out["max_ejection_percent"] = g.draw(st.integers(0, 100))
    return out


def health_check(g: Gen) -> dict:
    hc: dict = {"path": g.edge("health-check.path", st.just("/healthz"),
                               st.sampled_from(["/h\r\nx", "/\x00", f"/{EMOJI}", "/%"]))}
    interval = g.draw(st.integers(2, 60)) * 1000
    hc["interval"] = f"{interval}ms"
    hc["timeout"] = g.edge("duration.health-check-timeout", st.just(f"{interval // 2}ms"), st.just("0ms"))
    for key in ("healthy_threshold", "unhealthy_threshold"):
        if g.bool():
            hc[key] = count(g, f"health-check.{key}", 1, 10)
    return hc


def version_traffic(g: Gen, protocol: str, websockets: bool, external: bool) -> dict:
    """One version's own settings: each replaces the TrafficPolicy's field of that name as a whole."""
    out: dict = {}
    if g.bool():
        out["connection_pool"] = pool(g, protocol, websockets)
    if g.bool():
        out["outlier_detection"] = outlier(g)
    if g.bool():
        out["load_balancer"] = {"policy": g.draw(st.sampled_from(BALANCERS))}
    if protocol != "tcp" and not external and g.draw(st.integers(0, 2)) == 0:
        out["health_check"] = health_check(g)
    if rare(g, 47):  # per-service only: the model refuses them here, positioned
        key = g.draw(st.sampled_from(["rate_limit", "global_rate_limit", "hash_on"]))
        out[key] = {"requests": 10, "per": "1s"} if key == "rate_limit" else {"header": "x-user"}
    return out or {"load_balancer": {"policy": "least_request"}}


def traffic_policy(g: Gen, name: str, protocol: str, grpc: list[str], versions: list[str] = ("default",),
                   external: bool = False) -> dict:
    """A TrafficPolicy for service `name` (of `versions`; an ExternalService has the one version `default`)."""
    t: dict = {"kind": "TrafficPolicy", "service": name}
    websockets = protocol == "http" and g.draw(st.integers(0, 3)) == 0 or rare(g, 47)  # on grpc or tcp: E239, E234
    if websockets:
        t["websockets"] = True
    if g.bool():
        t["connection_pool"] = pool(g, protocol, websockets)
    if g.bool():
        t["outlier_detection"] = outlier(g)
    lb = g.draw(st.sampled_from(BALANCERS + [None]))
    if lb:
        t["load_balancer"] = {"policy": lb}
        if lb in HASHING and protocol != "tcp":
            kind = g.draw(st.sampled_from(["header", "cookie", "source_ip"]))
            hash_on: dict = {"header": {"header": g.draw(TOKEN)}, "source_ip": {"source_ip": True},
                             "cookie": {"cookie": g.draw(TOKEN)}}[kind]
            if kind == "cookie" and g.bool():
                hash_on["cookie_ttl"] = dur(g, "cookie-ttl")
            t["load_balancer"]["hash_on"] = hash_on
    if protocol != "tcp":
        if g.draw(st.integers(0, 2)) == 0:
            t["health_check"] = health_check(g)
        if g.draw(st.integers(0, 2)) == 0:
            t["rate_limit"] = rate_limit(g)
        if grpc and g.draw(st.integers(0, 2)) == 0:
            t["global_rate_limit"] = {
                "service": g.draw(st.sampled_from(grpc)), "domain": g.draw(st.sampled_from(["shop", "a.b_c-d"])),
                "descriptors": g.draw(st.lists(st.sampled_from(["remote_address", "path", "method", "destination"]),
                                               min_size=1, max_size=4, unique=True)),
                "failure_mode_deny": g.bool(), "timeout": dur(g, "global-rate-limit-timeout"),
            }
    if g.draw(st.integers(0, 2)) == 0:
        chosen = g.draw(st.lists(st.sampled_from(list(versions)), min_size=1, max_size=len(versions), unique=True))
        if rare(g, 31):  # a version the service does not have: E237
            chosen.append(g.draw(st.sampled_from(["v9", "default", "v1"])))
        with g.rarely(127):  # the same models as above, many edges: their risky values are explored there
            t["versions"] = {v: version_traffic(g, protocol, websockets, external) for v in dict.fromkeys(chosen)}
    return t


# -- AuthorizationPolicy -----------------------------------------------------------------------------------

CIDRS = ["127.0.0.0/8", "127.0.0.1/32", "::1/128", "10.0.0.0/8", "0.0.0.0/0", "::/0", "fd00::/8", "192.0.2.0/24"]
ODD_CIDRS = ["127.0.0.1/24", "10.0.0.0/33", "::/129", "300.1.2.3/8", "localhost", "", "10.0.0.0/8/8", "1.2.3.4/-1",
             "::ffff:127.0.0.1/128", "fe80::1%eth0/128"]
"""Host bits after the prefix, prefixes beyond the family, not an address: the model refuses them (positioned);
an IPv4-mapped IPv6 address and a zone are odd ones Envoy may trip on."""


def ip_blocks(g: Gen, addresses: list[str]) -> list[str]:
    """CIDR blocks: the mesh's own sidecar addresses (each one, or their /24), or wider ones."""
    ours = [f"{a}/32" for a in addresses] + [".".join(a.split(".")[:3]) + ".0/24" for a in addresses[:1]]
    blocks = g.draw(st.lists(st.sampled_from(ours + CIDRS), min_size=1, max_size=3, unique=True))
    with g.rarely():
        return [g.edge("authz.ip-block", st.just(b), st.sampled_from(ODD_CIDRS)) for b in blocks]


def path_matches(g: Gen) -> list[dict]:
    """One or two path matches: prefix, exact or (the newer form) regex."""
    kind = g.draw(st.sampled_from(["prefix", "exact", "prefix", "regex"]))
    if kind == "regex":
        with g.rarely():
            return [{"regex": regex(g, "authz.path-regex")}]
    out = [{kind: path(g, "authz.path")}]
    if g.bool():
        with g.rarely():
            out.append({g.draw(st.sampled_from(["prefix", "exact"])): path(g, "authz.path")})
    return out


def authz_rule(g: Gen, callers: list[str], namespaces: list[str], addresses: list[str], protocol: str,
               claims: bool) -> dict:
    """One rule. `callers` and `namespaces` are empty when the service has no mTLS (identity conditions would be
    E242); a tcp service takes only conditions on the caller, now and then a request condition (E245)."""
    r: dict = {}
    for key, names in (("from", callers), ("namespaces", namespaces), ("not_from", callers),
                       ("not_namespaces", namespaces)):
        if names and g.draw(st.integers(0, 1 if key == "from" else 3)) == 0:
            r[key] = g.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    for key in ("ip_blocks", "not_ip_blocks"):
        if g.draw(st.integers(0, 4)) == 0:
            r[key] = ip_blocks(g, addresses)
    if protocol == "tcp" and not rare(g, 31):
        return r
    if g.bool():
        r["paths"] = path_matches(g)
    if g.draw(st.integers(0, 3)) == 0:
        with g.rarely():
            r["not_paths"] = path_matches(g)
    if g.bool():
        r["methods"] = g.draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=2, unique=True))
    if g.draw(st.integers(0, 3)) == 0:
        r["not_methods"] = g.draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=3, unique=True))
    if g.draw(st.integers(0, 2)) == 0:
        r["headers"] = [header_match(g)]
    if claims and g.bool():
        r["claims"] = {text(g, "claims.name", st.sampled_from(["sub", "iss", "groups"])): text(g, "claims.value")}
    return r


def authorization_policy(g: Gen, name: str, callers: list[str], namespaces: list[str], addresses: list[str],
                         protocol: str, claims: bool) -> dict:
    a: dict = {"kind": "AuthorizationPolicy", "service": name}
    if g.bool():
        a["mode"] = g.draw(st.sampled_from(["enforce", "dry_run"]))
    for key in ("allow", "deny"):
        if g.bool():
            a[key] = [authz_rule(g, callers, namespaces, addresses, protocol, claims)
                      for _ in range(g.draw(st.integers(1, 2)))]
    return a
