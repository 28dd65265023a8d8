"""Port clashes: on one sidecar, and between sidecars that share a host.

Sidecars with a wildcard address (Kubernetes) live in their own network
namespaces, so only sidecars with specific addresses are compared with each
other; the apps behind one-host sidecars are included, since they bind too.
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
            target = services.get(dep)
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


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
