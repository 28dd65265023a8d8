"""Everything but route rules and authorization pairs: services, protections, security, gateways,
external services, Mesh settings; compared on the resolved view (effective values, Mesh defaults applied)."""

from __future__ import annotations

from compiler.diff.model import Change, kind_of, nested_changes, plain
from compiler.policy.resolved import Resolved
from compiler.policy.traffic import LoadBalancer

_OWN = ("kind", "name", "service")


def _doc(doc, *drop: str) -> dict | None:
    if doc is None:
        return None
    data = plain(doc)
    for key in _OWN + drop:
        data.pop(key, None)
    return data


def _emit(out: list[Change], section: str, subject: str, before, after, prefix: str = "") -> None:
    for path, a, b in nested_changes(before, after):
        item = f"{prefix}.{path}" if prefix and path else (prefix or path)
        out.append(Change(section, subject, item, kind_of(a, b), a, b))


def _presence(out, section, old: dict, new: dict, describe) -> list[str]:
    """Added and removed names; returns the names on both sides."""
    for name in sorted(set(old) - set(new)):
        out.append(Change(section, name, "", "removed", describe(old[name]), None))
    for name in sorted(set(new) - set(old)):
        out.append(Change(section, name, "", "added", None, describe(new[name])))
    return sorted(set(old) & set(new))


def _service_summary(sv) -> str:
    svc = sv.service
    return f"{svc.protocol} port {svc.port}, versions {', '.join(sv.versions)}"


def services(old: Resolved, new: Resolved) -> list[Change]:
    out: list[Change] = []
    for name in _presence(out, "services", old.views, new.views, _service_summary):
        a, b = old.views[name], new.views[name]
        for v in [v for v in a.versions if v not in b.versions]:
            out.append(Change("traffic", name, f"version {v}", "removed", plain(a.endpoints[v]), None))
        for v in [v for v in b.versions if v not in a.versions]:
            out.append(Change("traffic", name, f"version {v}", "added", None, plain(b.endpoints[v])))
        if a.default_version != b.default_version:
            out.append(Change("traffic", name, "default version", "changed", a.default_version, b.default_version))
        endpoints = lambda sv: {v: plain(sv.endpoints[v]) for v in sv.versions if v in a.versions and v in b.versions}
        _emit(out, "services", name, endpoints(a), endpoints(b), "endpoints")
        drop = ("versions", "default_version", "mtls", "namespace", "service_account")
        _emit(out, "services", name, _doc(a.service, *drop), _doc(b.service, *drop))
    return out


def _protections(view: Resolved, name: str) -> dict:
    mesh = view.mesh
    tp = view.traffic.get(name)
    return {
        "connection_pool": plain((tp and tp.connection_pool) or mesh.defaults.connection_pool),
        "outlier_detection": plain((tp and tp.outlier_detection) or mesh.defaults.outlier_detection),
        "load_balancer": plain(tp.load_balancer if tp else LoadBalancer()),
        "health_check": plain(tp and tp.health_check),
        "rate_limit": plain(tp and tp.rate_limit),
        "global_rate_limit": plain(tp and tp.global_rate_limit),
        "websockets": bool(tp and tp.websockets),
        "connect_timeout": str(mesh.defaults.connect_timeout),
        **_versions(view, name),
    }


def _versions(view: Resolved, name: str) -> dict:
    """`versions`: each version's effective settings that differ from the service's (TrafficPolicy `versions`);
    nothing when no version has its own."""
    target = view.views.get(name) or view.externals.get(name)
    own = {v: p for v, p in target.protections.items() if p.own}
    if not own:
        return {}
    return {"versions": {v: {f: _setting(p, f) for f in sorted(p.own)} for v, p in own.items()}}


def _setting(p, field: str):
    if field == "load_balancer":
        return {"policy": p.lb_policy}
    return plain(getattr(p, field))


def protections(old: Resolved, new: Resolved) -> list[Change]:
    """Effective protections (a TrafficPolicy's, else the Mesh's defaults) of each service and external."""
    out: list[Change] = []
    names = (set(old.views) | set(old.externals)) & (set(new.views) | set(new.externals))
    for name in sorted(names):
        _emit(out, "protections", name, _protections(old, name), _protections(new, name))
    return out


def security(old: Resolved, new: Resolved) -> list[Change]:
    out: list[Change] = []
    for name in sorted(set(old.views) & set(new.views)):
        a, b = old.views[name], new.views[name]
        if a.mtls != b.mtls:
            out.append(Change("security", name, "mTLS", "changed", a.mtls, b.mtls))
        if a.identity != b.identity:
            out.append(Change("security", name, "identity", "changed", a.identity, b.identity))
        _emit(out, "security", name, _doc(a.authz), _doc(b.authz), "authorization_policy")
        _emit(out, "security", name, _doc(a.authn), _doc(b.authn), "request_authentication")
    for name in sorted(set(old.gateways) & set(new.gateways)):
        a, b = old.gateways[name], new.gateways[name]
        if a.identity != b.identity:
            out.append(Change("security", name, "identity", "changed", a.identity, b.identity))
        if a.mtls != b.mtls:
            out.append(Change("security", name, "mesh certificates", "changed", a.mtls, b.mtls))
        _emit(out, "security", name, _doc(a.authn), _doc(b.authn), "request_authentication")
    return out


def _route_label(route) -> str:
    return f"route {','.join(route.hosts) or '*'} {route.path}"


def _gateway_routes(gv) -> dict:
    out: dict[str, dict] = {}
    for route, listeners in gv.routes:
        label = _route_label(route)
        while label in out:  # a second route for the same hosts and path (never reached)
            label += " (again)"
        out[label] = {"to": route.to, "listeners": list(listeners)}
    return out


def _gateway_summary(gv) -> str:
    listeners = ", ".join(f"{l.name} {l.protocol} :{l.port}" for l in gv.gateway.listeners)
    return f"listeners {listeners}; routes to {', '.join(gv.destinations) or 'nothing'}"


def gateways(old: Resolved, new: Resolved) -> list[Change]:
    out: list[Change] = []
    for name in _presence(out, "gateways", old.gateways, new.gateways, _gateway_summary):
        a, b = old.gateways[name], new.gateways[name]
        ra, rb = _gateway_routes(a), _gateway_routes(b)
        for label in ra:
            if label not in rb:
                out.append(Change("gateways", name, label, "removed", ra[label], None))
        for label in rb:
            if label not in ra:
                out.append(Change("gateways", name, label, "added", None, rb[label]))
            else:
                _emit(out, "gateways", name, ra[label], rb[label], label)
        common = [l for l in rb if l in ra]
        if [l for l in ra if l in rb] != common:
            out.append(Change("gateways", name, "routes (order)", "moved", [l for l in ra if l in rb], common))
        _emit(out, "gateways", name, _doc(a.gateway, "routes"), _doc(b.gateway, "routes"))
    return out


def _external_summary(ev) -> str:
    ext = ev.service
    return f"{ext.protocol} {ext.host}:{ext.port}{' with TLS' if ext.tls else ''}"


def externals(old: Resolved, new: Resolved) -> list[Change]:
    out: list[Change] = []
    for name in _presence(out, "externals", old.externals, new.externals, _external_summary):
        _emit(out, "externals", name, _doc(old.externals[name].service), _doc(new.externals[name].service))
    return out


def mesh(old: Resolved, new: Resolved) -> list[Change]:
    out: list[Change] = []
    _emit(out, "mesh", "mesh", _doc(old.mesh, "kind"), _doc(new.mesh, "kind"))
    if old.mesh.name != new.mesh.name:
        out.append(Change("mesh", "mesh", "name", "changed", old.mesh.name, new.mesh.name))
    return out
