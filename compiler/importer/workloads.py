"""Kubernetes Services and Deployments -> meshc Services (port, protocol, app_port, versions, identity)."""

from __future__ import annotations

from compiler.importer.model import Context, Doc, Workload, name_of
from compiler.importer.read import Resource

_PREFIXES = {"http": "http", "http2": "grpc", "grpc": "grpc", "grpc-web": "http", "tcp": "tcp", "https": "tcp",
             "tls": "tcp", "mongo": "tcp", "mysql": "tcp", "redis": "tcp"}


def protocol_of(port: dict) -> tuple[str, str]:
    """meshc protocol of a Kubernetes Service port, and how it was decided."""
    app = str(port.get("appProtocol") or "").lower()
    if app:
        return _PREFIXES.get(app, "tcp"), f"appProtocol {app}"
    name = str(port.get("name") or "").lower()
    prefix = name.split("-", 1)[0]
    if prefix in _PREFIXES:
        return _PREFIXES[prefix], f"port name {name}"
    return "http", "no appProtocol or name prefix: http assumed (Istio would sniff the protocol)"


def import_service(res: Resource, deployments: list[Resource], ctx: Context) -> None:
    spec = res.spec
    ports = spec.get("ports") or []
    if not ports or not isinstance(ports, list):
        ctx.refuse(res, ("spec",), "a Service without ports: nothing to import")
        return
    if len(ports) > 1:
        ctx.refuse(res, ("spec", "ports", 1), "meshc Services have one port: only the first is imported")
    port = ports[0]
    name = name_of(res.name)
    if name in ctx.workloads:
        ctx.refuse(res, ("metadata", "name"), f"a second Service named {name} (namespaces share meshc names)")
        return
    proto, why = protocol_of(port)
    body: dict = {"kind": "Service", "name": name}
    comments = [f"from Service {res.name} ({res.where()}); protocol {proto}: {why}"]
    if res.namespace != "default":
        body["namespace"] = res.namespace
    if proto != "http":
        body["protocol"] = proto
    body["port"] = int(port.get("port", 0))
    selector = spec.get("selector") if isinstance(spec.get("selector"), dict) else {}
    wl = Workload(name, res.namespace, body, res, dict(selector))
    matching = [d for d in deployments if d.namespace == res.namespace and _selects(selector, d)]
    app_port = None
    for dep in matching:
        template = (dep.spec.get("template") or {})
        labels = ((template.get("metadata") or {}).get("labels")) or {}
        pod = template.get("spec") or {}
        account = pod.get("serviceAccountName")
        if account:
            wl.service_account = str(account)
        wl.pods.append((dep.name, {str(k): str(v) for k, v in labels.items()}))
        version = labels.get("version")
        if version is not None:
            wl.version_labels[str(version)] = dict(labels)
        for container in pod.get("containers") or []:
            for cport in container.get("ports") or []:
                if app_port is None and cport.get("containerPort"):
                    app_port = int(cport["containerPort"])
    if app_port is None:
        target = port.get("targetPort", port.get("port"))
        app_port = int(target) if isinstance(target, int) else int(port.get("port", 0))
        comments.append(f"app_port {app_port}: the Service's targetPort (no Deployment names a containerPort)")
    if app_port == body["port"]:
        moved = app_port + 10000 if app_port + 10000 <= 65535 else 15080
        comments.append(f"app_port {moved}: the app listened on {app_port}, the port its callers use; in a meshc pod the "
                        f"sidecar takes {app_port} (Istio captured it with iptables), so the app moves to {moved}")
        ctx.note(res, ("spec", "ports", 0, "port"), f"the app must listen on {moved}: the sidecar takes {app_port}")
        app_port = moved
    body["app_port"] = app_port
    if wl.service_account and wl.service_account != name:
        body["service_account"] = wl.service_account
    if wl.version_labels:
        body["versions"] = {name_of(v): {} for v in sorted(wl.version_labels)}
        comments.append("versions: the Deployments' `version` labels")
    ctx.workloads[name] = wl
    ctx.add(name, Doc(f"{name}.yaml", body, comments))


def _selects(selector: dict, dep: Resource) -> bool:
    labels = (((dep.spec.get("template") or {}).get("metadata") or {}).get("labels")) or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
