"""DestinationRule -> the service's versions (subsets) and its TrafficPolicy (or an ExternalService's TLS)."""

from __future__ import annotations

from compiler.importer.model import Context, Doc, duration, name_of
from compiler.importer.read import Resource

POOL_WHERE = ("connection_pool: meshc applies it on each caller's sidecar and also on this service's own inbound "
              "sidecar (Istio: on callers only), so all callers together share one pool there")
"""An Istio pool limits each caller alone; meshc's also limits what reaches the service from all callers at once
(a burst within every caller's limit can still get 503 at the service's side)."""

_LB = {"ROUND_ROBIN": "round_robin", "LEAST_REQUEST": "least_request", "LEAST_CONN": "least_request",
       "RANDOM": "random"}


def import_destination_rule(res: Resource, ctx: Context) -> None:
    spec = res.spec
    host = str(spec.get("host", ""))
    target = ctx.resolve(host, res.namespace)
    if target is None:
        ctx.refuse(res, ("spec", "host"), f"host {host}: no Kubernetes Service or ServiceEntry of that name")
        return
    if target in ctx.externals:
        _external(res, target, ctx)
        return
    if any(d.body["kind"] == "TrafficPolicy" for d in ctx.docs.get(target, [])):
        ctx.refuse(res, ("spec", "host"), f"a second DestinationRule for {target}: meshc has one TrafficPolicy per "
                   "service (merge them into the first)")
        return
    wl = ctx.workloads[target]
    per_version: dict = {}
    if spec.get("subsets"):
        versions = {}
        for i, subset in enumerate(spec["subsets"]):
            version = name_of(str(subset.get("name")))
            versions[version] = {}
            wl.subsets[version] = {str(k): str(v) for k, v in (subset.get("labels") or {}).items()}
            if subset.get("trafficPolicy"):
                own = _traffic_policy(res, ("spec", "subsets", i, "trafficPolicy"), subset["trafficPolicy"], ctx,
                                      version=True)
                own = {k: v for k, v in own.items() if k not in ("kind", "service")}
                if own:
                    per_version[version] = own
        wl.service["versions"] = versions
        subset_labels = [str((sub.get("labels") or {}).get("version")) for sub in spec["subsets"]]
        for label in sorted(set(wl.version_labels) - set(subset_labels)):
            ctx.note(res, ("spec", "subsets"), f"the Deployment of {target} labelled version {label} is in no subset: "
                     "it is not a meshc version (its pods get no traffic)")
        comments = ctx.docs[target][0].comments
        comments[:] = [c for c in comments if not c.startswith("versions:")]
        comments.append(
            f"versions: the subsets of DestinationRule {res.name} ({res.where('spec', 'subsets')}); each is the "
            "app_port of its own pods")
    tp = spec.get("trafficPolicy") or {}
    body = _traffic_policy(res, ("spec", "trafficPolicy"), tp, ctx)
    if tp.get("tls"):
        mode = tp["tls"].get("mode")
        if mode == "ISTIO_MUTUAL":
            ctx.note(res, ("spec", "trafficPolicy", "tls"), "ISTIO_MUTUAL: meshc callers originate mTLS to every "
                     "service whose mtls mode is not disable")
        else:
            ctx.refuse(res, ("spec", "trafficPolicy", "tls"), f"tls mode {mode} to a mesh service: meshc uses the "
                       "mesh's mTLS (Mesh/Service mtls)")
    if per_version:
        body["versions"] = per_version
    if len(body) > 2:
        pooled = "connection_pool" in body or any("connection_pool" in v for v in per_version.values())
        ctx.add(target, Doc(f"{target}.yaml", body, [f"from DestinationRule {res.name} ({res.where()})"] + (
            ["versions: the subsets' own trafficPolicy; each field replaces the service's as a whole (as in Istio)"]
            if per_version else []) + ([POOL_WHERE] if pooled else [])))


def _traffic_policy(res: Resource, path: tuple, tp: dict, ctx: Context, version: bool = False) -> dict:
    body: dict = {"kind": "TrafficPolicy", "service": ctx.resolve(str(res.spec.get("host")), res.namespace)}
    pool = tp.get("connectionPool") or {}
    out: dict = {}
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    for src, key, target in ((tcp, "maxConnections", "max_connections"),
                             (http, "http1MaxPendingRequests", "max_pending_requests"),
                             (http, "http2MaxRequests", "max_requests"), (http, "maxRetries", "max_retries")):
        if key in src:
            out[target] = int(src[key])
    if "maxRequestsPerConnection" in http:
        out["max_requests_per_connection"] = int(http["maxRequestsPerConnection"])
    if "idleTimeout" in http:
        out["idle_timeout"] = duration(http["idleTimeout"], res, path + ("connectionPool", "http", "idleTimeout"), ctx)
    if "tcpKeepalive" in tcp:
        ka = tcp["tcpKeepalive"] or {}
        out["tcp_keepalive"] = {k: (duration(ka[k], res, path + ("connectionPool", "tcp", "tcpKeepalive", k), ctx)
                                    if k != "probes" else int(ka[k])) for k in ("probes", "time", "interval") if k in ka}
    upgrade = http.get("h2UpgradePolicy")
    if upgrade == "UPGRADE":
        out["upstream_protocol"] = "http2"
    elif upgrade not in (None, "DEFAULT", "DO_NOT_UPGRADE"):
        ctx.refuse(res, path + ("connectionPool", "http", "h2UpgradePolicy"), f"{upgrade}: not an Istio policy")
    if http.get("useClientProtocol"):
        out["upstream_protocol"] = "client"
    for key, why in (("connectTimeout", "meshc sets it mesh-wide: Mesh defaults.connect_timeout"),
                     ("maxConnectionDuration", "meshc has none"),
                     ("idleTimeout", "a tcp proxy idle timeout: meshc has the HTTP one (http.idleTimeout)")):
        if key in tcp:
            ctx.refuse(res, path + ("connectionPool", "tcp", key), why)
    if "maxConcurrentStreams" in http:
        ctx.refuse(res, path + ("connectionPool", "http", "maxConcurrentStreams"), "meshc has no equivalent")
    if out:
        body["connection_pool"] = out
    od = tp.get("outlierDetection")
    if od:
        o: dict = {}
        errors = od.get("consecutive5xxErrors", od.get("consecutiveErrors"))
        if errors is not None:
            o["consecutive_5xx"] = int(errors)
        if "consecutiveGatewayErrors" in od:
            o["consecutive_gateway_errors"] = int(od["consecutiveGatewayErrors"])
        for key, target in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
            if key in od:
                o[target] = duration(od[key], res, path + ("outlierDetection", key), ctx)
        if "maxEjectionPercent" in od:
            o["max_ejection_percent"] = int(od["maxEjectionPercent"])
        for key in ("minHealthPercent", "splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"):
            if key in od:
                ctx.refuse(res, path + ("outlierDetection", key), "meshc has no equivalent")
        body["outlier_detection"] = o
    lb = tp.get("loadBalancer")
    if lb and version and "simple" not in lb:
        ctx.refuse(res, path + ("loadBalancer",), "a version's own load balancer hashes on the service's hash key: "
                   "set consistentHash on the DestinationRule's trafficPolicy")
    elif lb:
        balancer = _load_balancer(res, path + ("loadBalancer",), lb, ctx)
        wl = ctx.workloads.get(body["service"])
        if "hash_on" in balancer and wl is not None and wl.service.get("protocol") == "tcp":
            ctx.refuse(res, path + ("loadBalancer", "consistentHash"), "consistent hashing on a tcp service: meshc "
                       "hashes per request (http or grpc services)")
        elif balancer:
            body["load_balancer"] = balancer
    if version:
        for key in sorted(set(tp) - {"connectionPool", "outlierDetection", "loadBalancer"}):
            ctx.refuse(res, path + (key,), "a version's own settings are its pool, outlier detection and load "
                       "balancer")
        return body
    if tp.get("portLevelSettings"):
        ctx.refuse(res, path + ("portLevelSettings",), "meshc Services have one port: set the policy for the service")
    return body


def _load_balancer(res: Resource, path: tuple, lb: dict, ctx: Context) -> dict:
    if "simple" in lb:
        policy = _LB.get(str(lb["simple"]))
        if policy is None:
            ctx.refuse(res, path + ("simple",), f"{lb['simple']}: meshc always balances over the service's instances")
            return {}
        return {"policy": policy}
    ch = lb.get("consistentHash")
    if not ch:
        for key in lb:
            ctx.refuse(res, path + (key,), "meshc has no equivalent")
        return {}
    out: dict = {"policy": "maglev" if "maglev" in ch else "ring_hash"}
    if "httpHeaderName" in ch:
        out["hash_on"] = {"header": str(ch["httpHeaderName"]).lower()}
    elif "httpCookie" in ch:
        cookie = ch["httpCookie"]
        out["hash_on"] = {"cookie": cookie.get("name")}
        if cookie.get("ttl"):
            out["hash_on"]["cookie_ttl"] = duration(cookie["ttl"], res, path + ("consistentHash", "httpCookie", "ttl"),
                                                    ctx)
    elif ch.get("useSourceIp"):
        out["hash_on"] = {"source_ip": True}
    else:
        ctx.refuse(res, path + ("consistentHash",), "meshc hashes on a header, a cookie or the source IP")
        return {}
    return out


def _external(res: Resource, target: str, ctx: Context) -> None:
    ext = ctx.externals[target]
    tp = res.spec.get("trafficPolicy") or {}
    tls = tp.get("tls") or {}
    path = ("spec", "trafficPolicy", "tls")
    for i, pls in enumerate(tp.get("portLevelSettings") or []):
        if pls.get("tls") and not tls:  # Istio's TLS origination example sets it on the one port
            tls, path = pls["tls"], ("spec", "trafficPolicy", "portLevelSettings", i, "tls")
    tp = {k: v for k, v in tp.items() if k != "portLevelSettings" or any(set(p) - {"port", "tls"} for p in v)}
    if tls:
        if tls.get("mode") != "SIMPLE":
            ctx.refuse(res, path + ("mode",), f"{tls.get('mode')}: meshc originates SIMPLE TLS to external services")
        else:
            ca = tls.get("caCertificates")
            out: dict = {"ca": ca or f"/etc/meshc/external/{target}/ca.pem"}
            if not ca:
                ext.doc.comments.append(f"tls.ca: {ext.name} had no caCertificates; meshc always verifies: put its CA "
                                        f"bundle at {out['ca']}")
                ctx.note(res, path, "no caCertificates: meshc always verifies the server; a CA file path was chosen")
            if tls.get("sni"):
                out["sni"] = tls["sni"]
            ext.doc.body["tls"] = out
            if ext.doc.body.get("protocol") == "tcp":
                ext.doc.body.pop("protocol")
                ext.doc.comments[:] = [c for c in ext.doc.comments if not c.startswith("protocol tcp")]
            ext.doc.comments.append(f"tls: from DestinationRule {res.name} ({res.where(*path)}): the sidecar "
                                    "originates TLS, apps call it in plain HTTP")
    rest = {k: v for k, v in tp.items() if k != "tls"}
    if rest:
        body = _traffic_policy(res, ("spec", "trafficPolicy"), rest, ctx)
        if len(body) > 2:
            ctx.edge.append(Doc("external.yaml", body, [f"from DestinationRule {res.name} ({res.where()})"]))
