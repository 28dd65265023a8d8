"""Services outside the mesh: names and hosts that would be ambiguous, settings that cannot apply.

An ExternalService (compiler/policy/external.py) becomes, on each caller's
sidecar, a virtual host whose domains are its `host` and `name` (with and
without the port) and a cluster that originates TLS to it
(compiler/lower/external.py). What this module refuses or warns about:

- E520 two ExternalServices with one name;
- E521 an ExternalService named like a Service (`calls`, Route and
  TrafficPolicy `service` would not say which is meant);
- E522 a `host` that names a mesh service: its name or its Kubernetes DNS
  names (`reviews`, `reviews.<namespace>`, `reviews.<namespace>.svc`,
  `reviews.<namespace>.svc.<cluster_domain>`), or another ExternalService's
  name: a caller's `Host: reviews` would be claimed twice;
- E523 two ExternalServices with one `host` (virtual host domains must be
  unique on a caller's sidecar, and one Host cannot go to two places);
- E524 a wildcard `host` or `tls.sni` (Envoy resolves one name, and a client
  sends one name in SNI);
- E525 TrafficPolicy `rate_limit`, `global_rate_limit` or `health_check` on an
  ExternalService: they are enforced by the destination's own sidecar or
  send probes to every instance, and an external host has neither;
- E529 `tls` on a host that is an IP address without `tls.sni` (TLS sends no
  IP address as a server name, and the certificate check is on DNS names);
- E533 a service in pods calls an ExternalService whose fixed endpoints are
  loopback addresses (from a pod, that is the pod itself), as E293;
- W530 an `http` or `grpc` ExternalService on port 443 without `tls`: the
  sidecar would speak plaintext to what is almost surely a TLS port;
- W531 an ExternalService no service calls, and no Route of a called service
  (or of a gateway route's destination) mirrors to: nothing is built for it.

AuthorizationPolicy and RequestAuthentication for an ExternalService (E526,
E527) and `from` naming one (E528) are in compiler/check/security.py; `calls`,
Route and TrafficPolicy accept ExternalServices where they accept services
(references.py, routes.py, traffic.py).
"""

from __future__ import annotations

import ipaddress
from typing import Iterator

from compiler.diagnostics import Diagnostic, Severity
from compiler.check.references import repeats
from compiler.policy.resolved import Resolved
from compiler.policy.types import is_loopback

_INBOUND_ONLY = (
    ("rate_limit", "a local rate limit is a token bucket on the destination's own sidecar"),
    ("global_rate_limit", "the destination's own sidecar asks the rate-limit service"),
    ("health_check", "health checks probe each instance, and an external host is one name the mesh does not run"),
)


def check_externals(view: Resolved) -> Iterator[Diagnostic]:
    yield from _names(view)
    yield from _hosts(view)
    yield from _settings(view)
    yield from _callers(view)


def _names(view: Resolved) -> Iterator[Diagnostic]:
    for ext, first in repeats(view.policy.external_services, lambda e: e.name):
        yield Diagnostic(
            "E520", "a second ExternalService with this name (the first is at {0}); rename one",
            ext.where("name"), ext.subject, refs=(first.where("name"),),
        )
    for ext in view.policy.external_services:
        svc = view.services.get(ext.name)
        if svc is not None:
            yield Diagnostic(
                "E521",
                "the Service at {0} has this name too: 'calls', Route and TrafficPolicy name either by it, and "
                "callers reach either with Host: <name>; rename one",
                ext.where("name"), ext.subject, refs=(svc.where("name"),),
            )


def _kubernetes_names(view: Resolved) -> dict[str, str]:
    """Each name a caller may use for a mesh service -> that service."""
    names: dict[str, str] = {}
    domain = view.mesh.kubernetes.cluster_domain if view.mesh is not None else None
    for svc in view.policy.services:
        forms = [svc.name, f"{svc.name}.{svc.namespace}", f"{svc.name}.{svc.namespace}.svc"]
        if domain:
            forms.append(f"{svc.name}.{svc.namespace}.svc.{domain}")
        for form in forms:
            names.setdefault(form, svc.name)
    return names


def _hosts(view: Resolved) -> Iterator[Diagnostic]:
    mesh_names = _kubernetes_names(view)
    external_names = {e.name: e for e in view.policy.external_services}
    hosts: dict[str, object] = {}
    for ext in view.policy.external_services:
        host = ext.host
        if host.startswith("*."):
            yield Diagnostic(
                "E524",
                "a wildcard cannot be an external host: Envoy resolves one name and sends one name as SNI; "
                "declare one ExternalService per host",
                ext.where("host"), ext.subject, "host",
            )
        elif host in mesh_names:
            form = "the name" if host == mesh_names[host] else "a Kubernetes DNS name"
            yield Diagnostic(
                "E522",
                f"'{host}' is {form} of the mesh service '{mesh_names[host]}': callers asking for it would get "
                "one or the other; give the external host its real DNS name",
                ext.where("host"), ext.subject, "host",
            )
        elif host in external_names and external_names[host] is not ext:
            yield Diagnostic(
                "E522",
                f"'{host}' is the name of the ExternalService at {{0}}: callers asking for it would get one or "
                "the other; give the external host its real DNS name",
                ext.where("host"), ext.subject, "host", refs=(external_names[host].where("name"),),
            )
        if host in hosts and ext.name != hosts[host].name:
            first = hosts[host]
            yield Diagnostic(
                "E523",
                f"the ExternalService '{first.name}' (at {{0}}) already has host '{host}': a caller's Host "
                f"'{host}' must lead to one place; use one ExternalService (a Route may split it by path)",
                ext.where("host"), ext.subject, "host", refs=(first.where("host"),),
            )
        else:
            hosts.setdefault(host, ext)
        tls = ext.tls
        if tls is not None and tls.sni is not None and tls.sni.startswith("*."):
            yield Diagnostic(
                "E524",
                "a wildcard cannot be sent as SNI, nor checked in a certificate as the server's name: give the "
                "server's one name",
                ext.where("tls", "sni"), ext.subject, "tls.sni",
            )
        if tls is not None and tls.sni is None and _is_ip(host):
            yield Diagnostic(
                "E529",
                f"host '{host}' is an IP address: TLS sends no IP address as the server name (SNI), and the server's "
                "certificate is checked for a DNS name: set tls.sni to the name its certificate holds",
                ext.where("tls"), ext.subject, "tls",
            )
        if tls is None and ext.protocol != "tcp" and ext.port == 443:
            yield Diagnostic(
                "W530",
                f"port 443 without tls: the sidecar would send plaintext {ext.protocol} to a port that almost "
                "surely speaks TLS; add tls (with the CA bundle to verify the server)",
                ext.where("port"), ext.subject, "port", severity=Severity.WARNING,
            )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _settings(view: Resolved) -> Iterator[Diagnostic]:
    for tp in view.policy.traffic_policies:
        if tp.service not in view.externals or tp.service in view.services:
            continue
        for field, why in _INBOUND_ONLY:
            if getattr(tp, field) is not None:
                yield Diagnostic(
                    "E525",
                    f"'{tp.service}' is an ExternalService: {field} cannot apply ({why}); limit the callers' "
                    "retries and pool instead (Route retries, TrafficPolicy connection_pool)",
                    tp.where(field), tp.subject, field,
                )


def _callers(view: Resolved) -> Iterator[Diagnostic]:
    called: set[str] = set()
    for sv in view.views.values():
        svc = sv.service
        called.update(svc.calls)
        for i, dep in enumerate(svc.calls):
            ev = view.externals.get(dep)
            if ev is None or dep in view.services:
                continue
            if sv.in_pods and not ev.resolve_dns:
                local = [e for e in ev.endpoints if e.is_ip and is_loopback(e.host)]
                if local:
                    yield Diagnostic(
                        "E533",
                        f"'{svc.name}' runs in pods and calls '{dep}', whose endpoint {local[0]} is a loopback "
                        "address: from a pod, that is the pod itself; give the external service an address pods "
                        "can reach",
                        svc.where("calls", i), svc.subject, f"calls[{i}]",
                    )
    used = _mirrored(view, called | {d for gw in view.all_gateways for d in gw.destinations if d in view.services})
    for ext in view.policy.external_services:
        if ext.name not in used and ext.name not in view.services:
            yield Diagnostic(
                "W531",
                f"no service calls '{ext.name}', so nothing is built for it: add it to the 'calls' of the services "
                "that use it",
                ext.where("name"), ext.subject, severity=Severity.WARNING,
            )


def _mirrored(view: Resolved, reached: set[str]) -> set[str]:
    """`reached` (what services call, the mesh services gateways route to: a gateway route to an
    ExternalService is refused) and every destination their Route rules mirror to, and so on: a mirror
    target's cluster is built on the sidecar (or gateway) that copies to it."""
    used = set(reached)
    todo = list(reached)
    while todo:
        route = view.routes.get(todo.pop())
        for rule in route.rules if route is not None else ():
            for mirror in rule.mirror:
                if mirror.service is not None and mirror.service not in used:
                    used.add(mirror.service)
                    todo.append(mirror.service)
    return used
