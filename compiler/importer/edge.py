"""Istio Gateway (+ VirtualServices bound to it), ServiceEntry and Sidecar -> Gateway, ExternalService, calls."""

from __future__ import annotations

from compiler.importer.model import Context, Doc, External, name_of
from compiler.importer.read import Resource

EDGE_DIR = "/etc/meshc/edge"


def _gateway_doc(ctx: Context, name: str) -> Doc | None:
    return next((d for d in ctx.edge if d.body.get("kind") == "Gateway" and d.body["name"] == name), None)


def import_gateway(res: Resource, ctx: Context) -> None:
    name = name_of(res.name)
    body: dict = {"kind": "Gateway", "name": name}
    if res.namespace != "default":
        body["namespace"] = res.namespace
    doc = Doc("gateways.yaml", body, [f"from Gateway {res.name} ({res.where()})"])
    listeners = []
    for i, server in enumerate(res.spec.get("servers") or []):
        path = ("spec", "servers", i)
        port = server.get("port") or {}
        proto = str(port.get("protocol", "HTTP")).upper()
        lname = name_of(str(port.get("name") or f"{proto.lower()}-{port.get('number')}"))
        listener: dict = {"name": lname, "port": int(port.get("number", 0))}
        tls = server.get("tls") or {}
        if proto == "HTTP":
            if tls.get("httpsRedirect"):
                listener["redirect_to_https"] = True
        elif proto == "HTTPS":
            mode = tls.get("mode", "SIMPLE")
            if mode not in ("SIMPLE", "MUTUAL"):
                ctx.refuse(res, path + ("tls", "mode"), f"{mode}: a meshc Gateway terminates TLS (SIMPLE or MUTUAL)")
                continue
            hosts = [h.split("/", 1)[-1] for h in server.get("hosts") or []]
            hosts = [h for h in hosts if h != "*"]
            if not hosts:
                ctx.refuse(res, path + ("hosts",), "hosts \"*\": a meshc certificate names its hosts")
                continue
            cred = tls.get("credentialName")
            if cred:
                folder = f"{EDGE_DIR}/{cred}"
                cert, key = f"{folder}/tls.crt", f"{folder}/tls.key"
                doc.comments.append(f"listener {lname}: credentialName {cred} -> {folder}/tls.crt and tls.key (mount "
                                    "the Secret there)")
            elif tls.get("serverCertificate"):
                cert, key = tls["serverCertificate"], tls.get("privateKey")
            else:
                ctx.refuse(res, path + ("tls",), "no credentialName or serverCertificate")
                continue
            gtls: dict = {"certificates": [{"hosts": hosts, "cert": cert, "key": key}]}
            if tls.get("minProtocolVersion") in ("TLSV1_2", "TLSV1_3"):
                gtls["min_version"] = tls["minProtocolVersion"][-3:].replace("_", ".")
            elif tls.get("minProtocolVersion"):
                ctx.refuse(res, path + ("tls", "minProtocolVersion"), "meshc accepts TLS 1.2 or 1.3 at least")
            if mode == "MUTUAL":
                gtls["client_ca"] = tls.get("caCertificates") or f"{EDGE_DIR}/{cred}/ca.crt"
            listener["protocol"] = "https"
            listener["tls"] = gtls
        else:
            ctx.refuse(res, path + ("port", "protocol"), f"{proto}: a meshc Gateway listens for http or https")
            continue
        listeners.append(listener)
    if not listeners:
        ctx.refuse(res, ("spec", "servers"), "no server the import could carry over")
        return
    body["listeners"] = listeners
    body["routes"] = []
    ctx.edge.append(doc)
    selector = res.spec.get("selector")
    if isinstance(selector, dict):
        ctx.gateway_selectors[name] = {str(k): str(v) for k, v in selector.items()}


def gateway_routes(res: Resource, gateways: list[str], ctx: Context) -> list[tuple[str, int, str, dict]]:
    """A VirtualService bound to gateways: its http rules become the Gateway's routes to mesh services (host and
    path prefix). What else a rule says (subsets, headers, timeouts...) is carried by the service's Route: the
    mesh rules when the VirtualService is also bound to `mesh`, else rules for that Gateway only (routes.py).
    Returns each carried rule as (gateway, http index, service, the rule with only that gateway's matches)."""
    hosts = [str(h) for h in res.spec.get("hosts") or [] if h != "*"]
    carried: list[tuple[str, int, str, dict]] = []
    for g in gateways:
        doc = _gateway_doc(ctx, name_of(g.split("/")[-1]))
        if doc is None:
            ctx.refuse(res, ("spec", "gateways"), f"gateway {g}: no Istio Gateway of that name was read")
            continue
        doc.comments.append(f"routes: from VirtualService {res.name} ({res.where()})")
        for i, http in enumerate(res.spec.get("http") or []):
            path = ("spec", "http", i)
            dests = http.get("route") or []
            services = {ctx.resolve(str((d.get("destination") or {}).get("host", "")), res.namespace) for d in dests}
            if len(services) != 1 or None in services:
                ctx.refuse(res, path + ("route",), "a gateway route goes to one mesh service (its versions are "
                           "chosen by the service's Route)")
                continue
            to = services.pop()
            kept = []
            for j, m in enumerate(http.get("match") or [{}]):
                if (m or {}).get("gateways") and g not in m["gateways"]:
                    continue  # the match's own gateways leave this gateway out (Istio: they replace the VS's)
                uri = (m or {}).get("uri") or {"prefix": "/"}
                kind, value = next(iter(uri.items()))
                if kind not in ("prefix", "exact"):
                    ctx.refuse(res, path + ("match", j, "uri"), f"uri {kind}: meshc Gateway routes match a prefix")
                    continue
                route: dict = {}
                if hosts:
                    route["hosts"] = hosts
                if value != "/":
                    route["path"] = value  # an exact path: the Route's rule matches it exactly
                other = next((r for r in doc.body["routes"] if {**r, "to": to} == {**route, "to": to}), None)
                if other is not None and other["to"] != to:
                    ctx.refuse(res, path + ("match", j), f"the host and path already go to {other['to']}: meshc "
                               "Gateway routes choose a service by host and path only")
                    continue
                if other is None and not _covered(doc.body["routes"], route, to):
                    doc.body["routes"].append({**route, "to": to})
                kept.append({k: v for k, v in m.items() if k != "gateways"} if m else m)
            if kept:
                carried.append((g, i, to, {**http, "match": kept} if http.get("match") else http))
    return carried


def _covered(routes: list[dict], route: dict, to: str) -> bool:
    """An earlier route of the same hosts already sends this path to the same service (its Route tells the
    requests apart): the Gateway needs no second route (it would never match)."""
    path = route.get("path", "/")
    for r in routes:
        if r.get("hosts") == route.get("hosts") and r["to"] == to:
            earlier = r.get("path", "/")
            if earlier in ("/", path) or path.startswith(earlier.rstrip("/") + "/"):
                return True
    return False


def import_service_entry(res: Resource, ctx: Context) -> None:
    spec = res.spec
    if spec.get("location", "MESH_EXTERNAL") != "MESH_EXTERNAL":
        ctx.refuse(res, ("spec", "location"), "MESH_INTERNAL: meshc Services are Kubernetes Services with sidecars")
        return
    resolution = spec.get("resolution", "NONE")
    if resolution not in ("DNS", "STATIC", "DNS_ROUND_ROBIN"):
        ctx.refuse(res, ("spec", "resolution"), f"{resolution}: meshc resolves an external host by DNS or uses "
                   "fixed endpoints")
        return
    ports = spec.get("ports") or []
    if not ports:
        ctx.refuse(res, ("spec", "ports"), "no port")
        return
    if len(ports) > 1:
        ctx.refuse(res, ("spec", "ports", 1), "an ExternalService has one port: only the first is imported")
    port = ports[0]
    proto = str(port.get("protocol", "TCP")).upper()
    protocol = {"HTTP": "http", "HTTP2": "grpc", "GRPC": "grpc"}.get(proto, "tcp")
    for i, host in enumerate(spec.get("hosts") or []):
        host = str(host)
        if host.startswith("*"):
            ctx.refuse(res, ("spec", "hosts", i), f"{host}: meshc ExternalServices name one host")
            continue
        name = name_of(host)
        body: dict = {"kind": "ExternalService", "name": name, "host": host,
                      "port": int(port.get("targetPort") or port.get("number", 0))}
        comments = [f"from ServiceEntry {res.name} ({res.where('spec', 'hosts', i)})"]
        if port.get("targetPort"):
            comments.append(f"port {body['port']}: the ServiceEntry's targetPort (apps call it on {port.get('number')})")
        if protocol != "http":
            body["protocol"] = protocol
            if proto in ("HTTPS", "TLS"):
                comments.append(f"protocol tcp: {proto}, the app's own TLS passes through")
        endpoints = []
        for ep in spec.get("endpoints") or []:
            address = ep.get("address")
            eport = (ep.get("ports") or {}).get(port.get("name")) or port.get("targetPort") or port.get("number")
            if address:
                endpoints.append(f"{address}:{eport}")
        if resolution == "STATIC" or endpoints:
            body["endpoints"] = endpoints
        doc = Doc("external.yaml", body, comments)
        ctx.edge.append(doc)
        ctx.externals[name] = External(name, (host.lower(),), doc, res)


def import_sidecar(res: Resource, ctx: Context, calls: dict[str, tuple[int, list[str]]]) -> None:
    """Sidecar egress hosts -> `calls`. As in Istio, a workload's own Sidecar wins over its namespace's, which
    wins over the root namespace's (istio-system)."""
    spec = res.spec
    root = res.namespace == "istio-system"
    policy = (spec.get("outboundTrafficPolicy") or {}).get("mode")
    if policy:
        ctx.mesh["egress"] = {"undeclared": "allow" if policy == "ALLOW_ANY" else "refuse"}
        ctx.mesh_comments.append(f"egress: outboundTrafficPolicy {policy} of Sidecar {res.name} "
                                 f"({res.where('spec', 'outboundTrafficPolicy')})" + ("" if root else
                                                                                      ": mesh-wide in meshc"))
    if spec.get("ingress"):
        ctx.refuse(res, ("spec", "ingress"), "meshc sidecars take the Service's port")
    if not spec.get("egress"):
        return  # Istio: a Sidecar without egress inherits its namespace's or the root's (else: every host)
    labels = (spec.get("workloadSelector") or {}).get("labels")
    if labels:
        rank, targets = 0, ctx.by_labels(labels, res.namespace)
    else:
        rank, targets = (2, list(ctx.workloads.values())) if root else \
            (1, [w for w in ctx.workloads.values() if w.namespace == res.namespace])
    for wl in targets:
        names: list[str] = []
        for i, eg in enumerate(spec.get("egress") or []):
            for j, host in enumerate(eg.get("hosts") or []):
                ns, _, h = str(host).partition("/")
                ns = wl.namespace if ns == "." else ns
                if h == "*":
                    names.extend(w.name for w in ctx.workloads.values() if ns == "*" or w.namespace == ns)
                    names.extend(ctx.externals)
                    continue
                target = ctx.resolve(h, ns if ns != "*" else wl.namespace)
                if target is not None:
                    names.append(target)
                elif ns != "istio-system" and wl is targets[0]:
                    ctx.refuse(res, ("spec", "egress", i, "hosts", j), f"{host}: no Service or ServiceEntry of "
                               "that name")
        if wl.name not in calls or calls[wl.name][0] > rank:
            calls[wl.name] = (rank, [])
        if calls[wl.name][0] == rank:
            listed = calls[wl.name][1]
            listed.extend(n for n in dict.fromkeys(names) if n != wl.name and n not in listed)
