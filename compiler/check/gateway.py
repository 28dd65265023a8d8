"""Gateways: names, listeners, TLS and routes that Envoy would refuse, or that would silently do nothing.

A Gateway is an Envoy at the mesh's edge (compiler/policy/gateway.py). What
this module refuses or warns about, each at its field:

- E500 two gateways with one name;
- E501 a gateway named like a Service or an ExternalService (one output folder
  `out/<name>/`, one identity for `from: [<name>]`, one `service:` for a
  RequestAuthentication: the name must say which one is meant), or with the
  SPIFFE identity of a Service or another Gateway (`from: [<gateway>]` would
  allow both);
- E401 a gateway named `kubernetes` while the Kubernetes output exists (its
  folder would be the manifests' `out/kubernetes/`, as for services);
- E502 `replicas` on a gateway with a specific address (one Envoy on its host,
  no Deployment: it would be ignored);
- E503 an `https` listener without `tls` (no certificate and key paths: nothing
  to terminate TLS with);
- E504 `tls` on an `http` listener (it would be ignored: the listener is plaintext);
- E505 `redirect_to_https` on an `https` listener (it would redirect to itself),
  or in a gateway without an `https` listener (nowhere to redirect to);
- E506 one SNI host on two certificates of one listener (Envoy refuses two
  filter chains with the same server name);
- E507 a route `to` an unknown service;
- E508 a route `to` a tcp service or an ExternalService (gateway routes are
  HTTP requests into the mesh);
- E509/E510 a route's `listeners` names an unknown listener / a listener that
  redirects to https (it routes nothing);
- E270 a route path no normalised request has (`//`, dot segments, an escaped
  slash: the gateway normalises paths as sidecars do, Mesh `paths`);
- E516 a gateway in pods routes to a service on a host's loopback, or a gateway
  on a host's loopback to a service in pods (as E293 for services);
- E517 an AuthorizationPolicy for a gateway (see compiler/check/security.py);
- W513 a route host served on an https listener whose certificates cover no
  such host (clients get the first certificate, which does not name it);
- W518 a listener that serves no route (every request gets 404);
- W519 a route to a service whose AuthorizationPolicy (or the Mesh's default
  deny) refuses every request from the gateway's identity.

Routes that can never match (E511/W512) are in compiler/check/shadowing.py,
address and port clashes (E514/E515) in compiler/check/ports.py.
"""

from __future__ import annotations

from typing import Iterator

from compiler.check.paths import _never_requested
from compiler.check.pod_folders import OUTPUT_FOLDER
from compiler.check.references import repeats
from compiler.check.shadowing import host_covers
from compiler.diagnostics import Diagnostic, Severity, did_you_mean
from compiler.policy.resolved import GatewayView, Resolved
from compiler.policy.types import is_loopback


def check_gateways(view: Resolved) -> Iterator[Diagnostic]:
    yield from _names(view)
    for gv in view.all_gateways:
        yield from _listeners(gv)
        yield from _routes(view, gv)
    yield from _pods_and_loopback(view)


def _names(view: Resolved) -> Iterator[Diagnostic]:
    for gw, first in repeats(view.policy.gateways, lambda g: g.name):
        yield Diagnostic(
            "E500", "a second Gateway with this name (the first is at {0}); rename one",
            gw.where("name"), gw.subject, refs=(first.where("name"),),
        )
    externals = {e.name: e for e in view.policy.external_services}
    # the Kubernetes output exists when a service or a gateway runs in pods
    pods = view.mesh is not None and (
        any(sv.in_pods for sv in view.views.values()) or any(gv.in_pods for gv in view.gateways.values())
    )
    for gw in view.policy.gateways:
        other = view.services.get(gw.name) or externals.get(gw.name)
        if other is not None:
            yield Diagnostic(
                "E501",
                f"the {other.kind} at {{0}} has this name too: a gateway's name is its output folder, its identity in "
                "'from', and what a RequestAuthentication names in 'service'; rename one",
                gw.where("name"), gw.subject, refs=(other.where("name"),),
            )
        elif view.mesh is not None:
            yield from _identity(view, gw)
        if gw.name == OUTPUT_FOLDER and pods:
            yield Diagnostic(
                "E401",
                f"a gateway cannot be named '{OUTPUT_FOLDER}' when the Kubernetes output exists: its folder would be "
                f"the manifests' out/{OUTPUT_FOLDER}/; rename it",
                gw.where("name"), gw.subject, "name",
            )
        if "replicas" in gw.model_fields_set and view.mesh is not None and not view.gateways[gw.name].in_pods:
            yield Diagnostic(
                "E502",
                f"replicas would be ignored: '{gw.name}' has a specific address, so it is one Envoy on its host, "
                "not a Deployment; remove replicas, or give it a wildcard address (0.0.0.0) to run it in pods",
                gw.where("replicas"), gw.subject, "replicas",
            )


def _identity(view: Resolved, gw) -> Iterator[Diagnostic]:
    """A gateway's SPIFFE ID must be its own: `from: [<gateway>]` allows whatever presents it."""
    mine = view.gateways[gw.name].identity
    others = [(sv.service, sv.identity) for sv in view.all_services]
    others += [(g.gateway, g.identity) for g in view.all_gateways if g.name < gw.name]
    for doc, identity in others:
        if identity == mine and doc.name != gw.name:
            yield Diagnostic(
                "E501",
                f"its identity {mine} is also the identity of {doc.kind} '{doc.name}' (at {{0}}): `from: [{gw.name}]` "
                f"would allow '{doc.name}' too, and `from: [{doc.name}]` the gateway; give it a service_account "
                "of its own",
                gw.where("service_account") if gw.service_account else gw.where("name"), gw.subject,
                refs=(doc.where("name"),),
            )
            return


def _listeners(gv: GatewayView) -> Iterator[Diagnostic]:
    gw = gv.gateway
    has_https = any(l.protocol == "https" for l in gw.listeners)
    served = {name for _, names in gv.routes for name in names}
    for i, listener in enumerate(gw.listeners):
        at = f"listeners[{i}]"
        if listener.protocol == "https" and listener.tls is None:
            yield Diagnostic(
                "E503",
                f"https listener '{listener.name}' has no tls: give tls.certificates (the cert and key file paths, "
                "with the hosts each is served for), or make it protocol: http",
                gw.where("listeners", i, "protocol"), gw.subject, f"{at}.protocol",
            )
        if listener.protocol == "http" and listener.tls is not None:
            yield Diagnostic(
                "E504",
                f"tls on http listener '{listener.name}' would be ignored (the listener is plaintext): make it "
                "protocol: https, or remove tls",
                gw.where("listeners", i, "tls"), gw.subject, f"{at}.tls",
            )
        if listener.redirect_to_https:
            if listener.protocol == "https":
                yield Diagnostic(
                    "E505",
                    f"https listener '{listener.name}' would redirect to https, that is to itself, forever: "
                    "redirect_to_https belongs on an http listener",
                    gw.where("listeners", i, "redirect_to_https"), gw.subject, f"{at}.redirect_to_https",
                )
            elif not has_https:
                yield Diagnostic(
                    "E505",
                    f"listener '{listener.name}' redirects to https, but this gateway has no https listener to "
                    "redirect to: add one (protocol: https with tls), or remove redirect_to_https",
                    gw.where("listeners", i, "redirect_to_https"), gw.subject, f"{at}.redirect_to_https",
                )
        elif listener.name not in served:
            yield Diagnostic(
                "W518",
                f"no route is served on listener '{listener.name}': every request to it gets 404; add a route "
                "(a route without 'listeners' is served on every listener that does not redirect)",
                gw.where("listeners", i), gw.subject, at, severity=Severity.WARNING,
            )
        if listener.tls is not None:
            first: dict[str, tuple[int, int]] = {}
            for j, cert in enumerate(listener.tls.certificates):
                for k, host in enumerate(cert.hosts):
                    if host in first:
                        fj, fk = first[host]
                        yield Diagnostic(
                            "E506",
                            f"'{host}' is already served by certificates[{fj}] of listener '{listener.name}' (at "
                            "{0}): a client's SNI must pick one certificate; remove it from one of them",
                            gw.where("listeners", i, "tls", "certificates", j, "hosts", k), gw.subject,
                            f"{at}.tls.certificates[{j}].hosts[{k}]",
                            refs=(gw.where("listeners", i, "tls", "certificates", fj, "hosts", fk),),
                        )
                    else:
                        first[host] = (j, k)


def _routes(view: Resolved, gv: GatewayView) -> Iterator[Diagnostic]:
    gw = gv.gateway
    listeners = {l.name: l for l in gw.listeners}
    names = sorted(view.services)
    for i, route in enumerate(gw.routes):
        at = f"routes[{i}]"
        target = view.services.get(route.to)
        if target is None:
            if route.to in view.externals:
                yield Diagnostic(
                    "E508",
                    f"'{route.to}' is an ExternalService: a gateway routes requests into the mesh, to a Service; "
                    "services inside the mesh call external hosts through their own sidecars",
                    gw.where("routes", i, "to"), gw.subject, f"{at}.to",
                )
            else:
                what = "a gateway (gateways do not route to each other)" if route.to in view.gateways else ""
                yield Diagnostic(
                    "E507",
                    f"'{route.to}' is {what}" if what else
                    f"unknown service '{route.to}'{did_you_mean(route.to, names)}",
                    gw.where("routes", i, "to"), gw.subject, f"{at}.to",
                )
        elif target.protocol == "tcp":
            yield Diagnostic(
                "E508",
                f"'{route.to}' is a tcp service: gateway routes carry HTTP requests (by host and path), which a tcp "
                "service cannot take",
                gw.where("routes", i, "to"), gw.subject, f"{at}.to",
            )
        for j, name in enumerate(route.listeners):
            listener = listeners.get(name)
            if listener is None:
                yield Diagnostic(
                    "E509",
                    f"unknown listener '{name}'{did_you_mean(name, sorted(listeners))} "
                    f"(this gateway's: {', '.join(sorted(listeners))})",
                    gw.where("routes", i, "listeners", j), gw.subject, f"{at}.listeners[{j}]",
                )
            elif listener.redirect_to_https:
                yield Diagnostic(
                    "E510",
                    f"listener '{name}' redirects every request to https and routes nothing; serve the route on the "
                    "https listener",
                    gw.where("routes", i, "listeners", j), gw.subject, f"{at}.listeners[{j}]",
                )
        yield from _certificates(gv, i)
        problem = _never_requested(route.path.split("?")[0], view.mesh) if view.mesh is not None else None
        if problem:
            yield Diagnostic(
                "E270", f"'{route.path}' never matches a request: {problem.replace('before rules run', 'before routing')}",
                gw.where("routes", i, "path"), gw.subject, f"{at}.path",
            )
        if target is not None and target.protocol != "tcp" and view.mesh is not None:
            reason = _refused(view, gw.name, route.to)
            if reason:
                yield Diagnostic(
                    "W519",
                    f"every request this route sends to '{route.to}' would be refused (403): {reason}; allow the "
                    f"gateway there (an allow rule with from: [{gw.name}])",
                    gw.where("routes", i, "to"), gw.subject, f"{at}.to", severity=Severity.WARNING,
                )


def _refused(view: Resolved, gateway: str, name: str) -> str | None:
    """Why the destination's sidecar refuses every request from the gateway, when its AuthorizationPolicy
    (or the Mesh's default) provably does: no allow rule can match the gateway's identity, or a deny rule on
    it has no other condition. (With mTLS disabled there is no identity at all: E242 says it.)"""
    sv = view.views[name]
    if sv.mtls == "disable":
        return None
    ap = sv.authz
    if ap is not None and ap.mode != "enforce":
        return None
    for rule in ap.deny if ap else []:
        others = (rule.paths, rule.methods, rule.headers, rule.claims, rule.namespaces, rule.ip_blocks, rule.not_from,
                  rule.not_namespaces, rule.not_ip_blocks, rule.not_paths, rule.not_methods)
        if gateway in rule.from_ and not any(others):
            return f"its AuthorizationPolicy denies '{gateway}'"
    allow = ap.allow if ap else []
    if not allow and view.mesh.authorization.default == "deny":
        return "the Mesh's authorization default is deny, and it has no AuthorizationPolicy allowing anything"
    if allow and all(rule.from_ and gateway not in rule.from_ for rule in allow):
        return f"its AuthorizationPolicy allows only other callers ({', '.join(sorted({c for r in allow for c in r.from_}))})"
    return None


def _certificates(gv: GatewayView, i: int) -> Iterator[Diagnostic]:
    """W513: a host of route i, on an https listener, that none of the listener's certificates is served for."""
    gw = gv.gateway
    route, served_on = gv.routes[i]
    listeners = {l.name: (n, l) for n, l in enumerate(gw.listeners)}
    for name in served_on:
        n, listener = listeners.get(name, (None, None))
        if listener is None or listener.protocol != "https" or listener.tls is None:
            continue
        served = [h for cert in listener.tls.certificates for h in cert.hosts]
        for k, host in enumerate(route.hosts):
            if not any(host_covers(c, host) for c in served):
                yield Diagnostic(
                    "W513",
                    f"no certificate of https listener '{name}' is served for '{host}': such clients get the first "
                    f"certificate (for {', '.join(listener.tls.certificates[0].hosts)}), which a browser refuses "
                    "for this name; add the host to a certificate's hosts",
                    gw.where("routes", i, "hosts", k), gw.subject, f"routes[{i}].hosts[{k}]",
                    severity=Severity.WARNING,
                )


def _pods_and_loopback(view: Resolved) -> Iterator[Diagnostic]:
    """As E293 for services: from a pod, a loopback address is the pod itself; a host's loopback cannot reach
    cluster DNS. Destinations and the tracing collector."""
    if view.mesh is None:
        return
    for gv in view.gateways.values():
        gw = gv.gateway
        targets = [(r.to, ("routes", i, "to")) for i, r in enumerate(gw.routes)]
        if gv.tracing is not None:
            targets.append((gv.tracing.collector, ("observability", "tracing", "collector")))
        on_loopback = not gv.in_pods and is_loopback(gv.address)
        reported: set[str] = set()
        for name, path in targets:
            target = view.views.get(name)
            if target is None or name in reported:
                continue
            target_loopback = target.placement.one_host and is_loopback(target.placement.address)
            if gv.in_pods and target_loopback:
                reason = f"from a pod, {target.placement.address} is the pod itself"
            elif on_loopback and target.in_pods:
                reason = f"'{gw.name}' listens on a host's loopback ({gv.address}), outside the cluster's network"
            else:
                continue
            reported.add(name)
            doc = gw if path[0] == "routes" or gw.observability.tracing else view.mesh
            yield Diagnostic(
                "E516",
                f"gateway '{gw.name}' {'runs in pods' if gv.in_pods else 'is on one host'} and reaches '{name}', "
                f"which {'runs in pods' if target.in_pods else 'is on one host'}: {reason}; run both in pods "
                "(address 0.0.0.0) or give the one-host one an address pods can reach",
                doc.where(*path), doc.subject,
            )
