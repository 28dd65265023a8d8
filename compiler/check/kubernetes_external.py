"""Kubernetes mode for ExternalService CA bundles: what a caller's pod needs of the `tls.ca` path.

In the pods of a service (or gateway) whose sidecar originates TLS to an ExternalService, the CA bundle
comes from ConfigMap `<external>-ca` (compiler/policy/external_ca.py), mounted read-only at the folder of
`tls.ca` (the CA files of one folder share one volume there). What a platform engineer can get wrong:

- E403 the folder of `tls.ca` is `/`, or a folder another volume of that pod is mounted at: `config_dir`
  (the sidecar's ConfigMap), `mtls.certs_dir` (its certificate Secret), /tmp (its scratch emptyDir), the
  folder of a file access log, a gateway's folder of edge TLS files; a folder holds one volume, and the
  bundle would hide those files (or they it); or a folder whose volume would hide what Envoy needs to
  start (the folder of the Envoy binary or one above it, the system's library folders, /proc, /sys, /dev);
- E407 a `tls.ca` path a ConfigMap cannot provide as written: a file name starting with `..` (Kubernetes
  refuses such a key; `..data` is kubelet's own link in the folder), or `.`/`..`/empty segments (the
  folder kubelet mounts would not be the one Envoy opens and watches).

Only callers in pods matter: on a host the file is wherever the path says.
"""

from __future__ import annotations

import posixpath
from typing import Iterator

from compiler.check.pod_folders import SCRATCH, edge_folders, envoy_folders, volume_folder
from compiler.diagnostics import Diagnostic, Source
from compiler.kubernetes.sidecar import ENVOY_BINARY
from compiler.policy.external_ca import ca_configmaps, reached_with_tls
from compiler.policy.resolved import Resolved


SYSTEM = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/proc", "/sys", "/dev")
"""Folders a volume must not cover (or sit in): the dynamic libraries Envoy loads, the kernel's and
the runtime's own file systems."""


def _hides(folder: str) -> str | None:
    """What a volume at `folder` would hide that Envoy needs to start, if anything."""
    binary_dir = posixpath.dirname(ENVOY_BINARY)
    if binary_dir == folder or binary_dir.startswith(folder + "/"):
        return f"the Envoy binary {ENVOY_BINARY}"
    for system in SYSTEM:
        if folder == system or folder.startswith(system + "/") or system.startswith(folder + "/"):
            return f"the system folder {system}"
    return None


def check_kubernetes_externals(view: Resolved) -> Iterator[Diagnostic]:
    mesh = view.mesh
    if mesh is None:
        return
    cas = ca_configmaps(view.policy.external_services)
    pods: list[tuple[str, list[str], list[tuple[str, str, Source | None]]]] = []  # (who, externals, other volumes)
    for sv in view.views.values():
        if sv.in_pods:
            log = sv.access_log
            doc = sv.service if sv.service.observability.access_log else mesh
            pods.append((f"'{sv.name}'", reached_with_tls(view, sv.service.calls),
                         _volumes(view, sv.mtls != "disable", log, doc, "sidecar")))
    for gv in view.gateways.values():
        if gv.in_pods:
            gw = gv.gateway
            doc = gw if gw.observability.access_log else mesh
            volumes = _volumes(view, bool(gv.mtls), gv.access_log, doc, "gateway")
            volumes += [(what, folder, where) for what, folder, where, _ in edge_folders(gw, f" (gateway '{gw.name}')")]
            pods.append((f"gateway '{gw.name}'", reached_with_tls(view, gv.destinations), volumes))

    clashes: dict[tuple, list[str]] = {}  # (external, message, ref) -> the pods it happens in, in order
    for who, externals, volumes in pods:
        for name in externals:
            ext = view.externals[name].service
            ca = cas[ext.tls.ca]
            folder = volume_folder(ca.folder)
            if folder == "/":
                key = (name, f"the folder of {ca.path} is '/': a pod cannot mount a volume over its whole filesystem; "
                       f"put the bundle in a folder of its own (like /etc/meshc/external/{name}/)", None)
                clashes.setdefault(key, []).append(who)
                continue
            hidden = _hides(folder)
            if hidden is not None:
                key = (name, f"the volume of ConfigMap '{ca.name}' at '{folder}' would hide {hidden}, and the "
                       f"container could not start; put the bundle in a folder of its own (like "
                       f"/etc/meshc/external/{name}/)", None)
                clashes.setdefault(key, []).append(who)
            for what, other, where in volumes:
                if other == folder:
                    at = " ({0})" if where is not None else ""
                    key = (name, f"the folder of {ca.path}, '{folder}', would be the volume of ConfigMap '{ca.name}' "
                           f"(key '{ca.key}'), and it is {what}{at}: a folder holds one volume; put the bundle in a "
                           f"folder of its own (like /etc/meshc/external/{name}/)", where)
                    clashes.setdefault(key, []).append(who)
    for (name, message, ref), whos in clashes.items():
        ext = view.externals[name].service
        yield Diagnostic(
            "E403", f"in the pods of {', '.join(whos)}, which originate TLS to it, {message}",
            ext.where("tls", "ca"), ext.subject, "tls.ca", refs=(ref,) if ref is not None else (),
        )
    called = sorted({name for _, externals, _ in pods for name in externals})
    for name in called:
        ext = view.externals[name].service
        path = ext.tls.ca
        base = posixpath.basename(path)
        parts = path.split("/")[1:-1]
        if base.startswith("..") or base == ".":
            why = f"its file name '{base}' cannot be a ConfigMap key (Kubernetes refuses keys starting with '..'; " \
                  "'..data' is kubelet's own link in a mounted folder)"
        elif any(p in ("", ".", "..") for p in parts):
            why = "its folder has '.', '..' or empty segments: the folder mounted would not be the one Envoy " \
                  "opens and watches"
        else:
            continue
        yield Diagnostic(
            "E407",
            f"in pods this CA bundle is read from ConfigMap '{cas[path].name}' mounted at the folder of '{path}', and "
            f"{why}; write the path plainly, like /etc/meshc/external/{name}/ca.pem",
            ext.where("tls", "ca"), ext.subject, "tls.ca",
        )


def _volumes(view: Resolved, mtls: bool, log, doc, role: str) -> list[tuple[str, str, Source | None]]:
    """(what, folder, where the policy names it) of a pod's volumes other than CA bundles and edge files."""
    out = [(what, folder, where) for what, folder, where, _ in envoy_folders(view.mesh, mtls, log, doc)]
    out.insert(1, (f"/tmp (the {role}'s scratch folder)", SCRATCH, None))
    return out
