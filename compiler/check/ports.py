"""Port clashes: on one sidecar, and between sidecars that share a host.

Sidecars with a wildcard address (Kubernetes) live in their own network
namespaces, so only sidecars with specific addresses are compared with each
other; the apps behind one-host sidecars are included, since they bind too.
In a pod, the app's loopback port and the readiness listener's probe port
must also differ from the sidecar's ports (E212).

Gateways (compiler/policy/gateway.py) bind their listeners, admin interface
and metrics listener (in pods also the readiness listener): one port twice on
one gateway is E515; a gateway with a specific address shares its host with
the one-host sidecars, apps and other gateways, and an address:port bound
twice there is E514. A gateway with a wildcard address runs in pods (its own
network namespace, like a service in pods), so it is compared with nothing.
The outbound tcp listener of a tcp ExternalService a service calls is one of
that sidecar's ports, like a tcp mesh service's.
"""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic
from compiler.policy.resolved import Resolved


def check_ports(view: Resolved) -> Iterator[Diagnostic]:
    if view.mesh is None:
        return
    services = view.services
    host_binds: dict[tuple[str, int], str] = {}
    mesh_said: set = set()

    for sv in view.all_services:
        svc, p = sv.service, sv.placement
        local: list[tuple[int, str, tuple]] = [
            (p.inbound_port, "inbound listener (port)", ("port",)),
            (p.outbound_port, "outbound listener (sidecar.outbound_port)", ("sidecar", "outbound_port")),
            (p.admin_port, "admin interface (sidecar.admin_port)", ("sidecar", "admin_port")),
        ]
        metrics = sv.metrics
        if metrics is not None:
            local.append((metrics.port, "metrics listener (observability.metrics.port)", ("observability", "metrics", "port")))
        for i, dep in enumerate(svc.calls):
            target = services.get(dep) or getattr(view.externals.get(dep), "service", None)
            if target is not None and target.protocol == "tcp":
                local.append((target.port, f"outbound tcp listener for '{dep}'", ("calls", i)))
        owners: dict[int, tuple[str, tuple]] = {}
        for port, what, path in local:
            if port in owners:
                first, first_path = owners[port]
                # point at whichever of the two the policy spells out (the other may be a default)
                at = svc.where(*path)
                if at == svc.source:
                    at = svc.where(*first_path)
                yield Diagnostic(
                    "E212",
                    f"port {port} is used twice on this sidecar: {first} and {what}",
                    at,
                    svc.subject,
                )
            else:
                owners[port] = (what, path)
        if p.in_pods:
            for d in _pod_ports(view, sv, owners):
                if d.subject == view.mesh.subject:  # a Mesh setting clashes in every pod: say it once
                    if (d.source, d.message) in mesh_said:
                        continue
                    mesh_said.add((d.source, d.message))
                yield d

        if not p.one_host:
            continue
        binds = [
            (p.address, port, f"{what} of the '{svc.name}' sidecar", path)
            for port, what, path in local
            if p.admin_address == p.address or path != ("sidecar", "admin_port")
        ]
        if p.admin_address != p.address:
            binds.append(
                (p.admin_address, p.admin_port, f"admin interface of the '{svc.name}' sidecar", ("sidecar", "admin_port"))
            )
        for version in sv.versions:
            # a version without endpoints binds the app_port (nothing when that is missing: E215)
            path = ("app_port",) if version in sv.app_port_versions else ("versions", version)
            if path == ("app_port",) and version != sv.app_port_versions[0]:
                continue  # every such version is the one app on its app_port: one bind, named by the first
            for ep in sv.endpoints[version]:
                if ep.is_ip:
                    binds.append((ep.host, ep.port, f"app '{svc.name}' version '{version}'", path))
        for host, port, what, path in binds:
            key = (host, port)
            if key in host_binds and host_binds[key] != what:
                yield Diagnostic(
                    "E213",
                    f"{_address(host, port)} is bound twice on this host: by the {host_binds[key]} and by the {what}",
                    svc.where(*path),
                    svc.subject,
                )
            else:
                host_binds.setdefault(key, what)

    for gv in view.all_gateways:
        yield from _gateway_ports(view, gv, host_binds)


def _gateway_ports(view: Resolved, gv, host_binds: dict[tuple[str, int], str]) -> Iterator[Diagnostic]:
    gw, mesh = gv.gateway, view.mesh
    name = f"the '{gw.name}' gateway"
    admin_at = (gw, ("admin_port",)) if gw.admin_port is not None else (mesh, ("sidecar", "admin_port"))
    local: list[tuple[str, int, str, tuple]] = [
        (gv.address, l.port, f"listener '{l.name}'", (gw, ("listeners", i, "port")))
        for i, l in enumerate(gw.listeners)
    ]
    local.append((gv.admin_address, gv.admin_port, "admin interface", admin_at))
    if gv.metrics is not None:
        own = gw.observability.metrics
        at = (gw, ("observability", "metrics", "port")) if own else (mesh, ("observability", "metrics", "port"))
        local.append((gv.address, gv.metrics.port, "metrics listener", at))
    if gv.in_pods:
        local.append(
            (gv.address, mesh.kubernetes.probe_port, "readiness listener (Mesh kubernetes.probe_port)",
             (mesh, ("kubernetes", "probe_port")))
        )
    owners: dict[int, tuple[str, object, tuple]] = {}
    for _, port, what, (doc, path) in local:
        if port in owners:
            first, first_doc, first_path = owners[port]
            # point at the gateway's own field of the two (the other may be a Mesh default)
            at = doc.where(*path) if doc is gw else first_doc.where(*first_path) if first_doc is gw else gw.source
            yield Diagnostic(
                "E515",
                f"port {port} is used twice on {name}: by its {first} and its {what}; give one another port",
                at, gw.subject,
            )
        else:
            owners[port] = (what, doc, path)
    if gv.in_pods:
        return
    for host, port, what, (doc, path) in local:
        if owners[port][0] != what:
            continue  # the gateway's own clash (E515)
        key = (host, port)
        mine = f"{what} of {name}"
        if key in host_binds and host_binds[key] != mine:
            at = doc.where(*path) if doc is gw else gw.where("address") if gw.address else gw.source
            yield Diagnostic(
                "E514",
                f"{_address(host, port)} is bound twice on this host: by the {host_binds[key]} and by the {mine}; "
                "give the gateway another address or port",
                at, gw.subject,
            )
        else:
            host_binds.setdefault(key, mine)


def _pod_ports(view: Resolved, sv, owners: dict[int, tuple[str, tuple]]) -> Iterator[Diagnostic]:
    """In a pod the sidecar, its readiness listener and the app share one network namespace: the app's
    loopback port and the probe port must differ from every port the sidecar binds (and each other)."""
    svc, mesh = sv.service, view.mesh
    owners = dict(owners)
    if sv.app_port_versions and svc.app_port is not None:
        port = svc.app_port
        if port in owners:
            yield Diagnostic(
                "E212",
                f"port {port} is used twice in the pods of '{svc.name}': {owners[port][0]} and the app (app_port); "
                "the sidecar and its app share the pod's network, so the app needs a port of its own",
                svc.where("app_port"), svc.subject,
            )
        else:
            owners[port] = ("the app (app_port)", ("app_port",))
    port = mesh.kubernetes.probe_port
    if port in owners:
        first, first_path = owners[port]
        clash = f"{first} and the readiness listener (Mesh kubernetes.probe_port)"
        at, subject = svc.where(*first_path), svc.subject
        if "probe_port" in mesh.kubernetes.model_fields_set:
            at, subject = mesh.where("kubernetes", "probe_port"), mesh.subject
        elif at == svc.source and first_path[0] != "port":  # the service keeps the Mesh's setting
            at, subject = mesh.where(*first_path), mesh.subject
        where = "every pod that keeps the Mesh's settings" if subject == mesh.subject else f"the pods of '{svc.name}'"
        yield Diagnostic("E212", f"port {port} is used twice in {where}: {clash}", at, subject)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
