"""Kubernetes output: what a pod's sidecar needs of the folders a policy names, and of service names.

In a pod each folder the sidecar reads or writes is a volume of its own (compiler/kubernetes/sidecar.py):
the ConfigMap at `config_dir`, the certificate Secret at `mtls.certs_dir` (mTLS on), an emptyDir at
/tmp, and one at the folder of a file access log. Kubernetes refuses a pod with two volumes at one
folder, or one at `/`. And the manifests go to the output's `kubernetes/` folder, so no service may be
named so (its sidecar folder would be that folder; in namespace `default` its Service would also
replace the one of the cluster's API server):

- E401 a service named `kubernetes` while some service runs in pods;
- E403 two of a pod's sidecar volumes at one folder, or one at `/` (the folder of an ExternalService's CA
  bundle among them: compiler/check/kubernetes_external.py, with E407).

(E402, a sidecar's files too large for a ConfigMap, depends on the rendered files: `meshc build` says
it, compiler/kubernetes/problems.py, which also repeats E403 for folders moved by `--config-root` and
`--certs-root`.)

The list of an Envoy's volumes (`envoy_folders`, and a gateway's `edge_folders`) is shared with the
checks of gateway pods (kubernetes_gateway.py) and of CA bundle folders (kubernetes_external.py).
"""

from __future__ import annotations

import posixpath
from typing import Iterator

from compiler.diagnostics import Diagnostic, Source
from compiler.policy.edge_secrets import CA_CERT, TLS_CERT, edge_secrets
from compiler.policy.resolved import Resolved

OUTPUT_FOLDER = "kubernetes"  # compiler.kubernetes.layout.DIR
SCRATCH = "/tmp"  # the sidecar's emptyDir (compiler.kubernetes.sidecar)


def volume_folder(path: str) -> str:
    """The folder a volume is mounted at for `path` (no trailing slash; `/` for the root)."""
    return path.rstrip("/") or "/"


def envoy_folders(mesh, mtls: bool, log, doc) -> list[tuple[str, str, Source, str]]:
    """(what, folder, where the policy names it, its document's subject) of each volume a pod's Envoy (a
    sidecar's or a gateway's) has besides /tmp and CA bundles: the ConfigMap at `config_dir`, the
    certificate Secret at `mtls.certs_dir` when `mtls`, the folder of a file access log `log` (named in
    `doc`, the Service or Gateway that sets it, else the Mesh) unless it is /tmp."""
    out = [("config_dir", volume_folder(mesh.config_dir), mesh.where("config_dir"), mesh.subject)]
    if mtls:
        out.append(("mtls.certs_dir", volume_folder(mesh.mtls.certs_dir), mesh.where("mtls", "certs_dir"), mesh.subject))
    if log is not None and log.to == "file" and log.path:
        folder = volume_folder(posixpath.dirname(log.path.rstrip("/")) or "/")
        if folder != SCRATCH:
            out.append(("the access log's folder", folder, doc.where("observability", "access_log", "path"),
                        doc.subject))
    return out


def edge_folders(gw, label: str = "") -> list[tuple[str, str, Source, str]]:
    """(what, folder, where, subject) of each edge TLS file of a gateway in pods (the volumes of its edge
    Secrets, compiler/policy/edge_secrets.py); `what` is "the folder of <path>" and `label`."""
    out = []
    for s in edge_secrets(gw):
        for key, path in s.files:
            field = s.path if key == CA_CERT else s.path + ("cert" if key == TLS_CERT else "key",)
            out.append((f"the folder of {path}{label}", volume_folder(posixpath.dirname(path)), gw.where(*field), gw.subject))
    return out


def check_pod_folders(view: Resolved) -> Iterator[Diagnostic]:
    mesh = view.mesh
    pods = [sv for sv in view.views.values() if sv.in_pods] if mesh is not None else []
    if not pods:
        return
    named = view.services.get(OUTPUT_FOLDER)
    if named is not None:
        yield Diagnostic(
            "E401",
            f"a service named '{OUTPUT_FOLDER}' while services run in pods: its sidecar folder would be the "
            f"output's {OUTPUT_FOLDER}/ folder, where the Kubernetes manifests go (and in namespace 'default' its "
            "Service would replace the one of the cluster's API server); rename it",
            named.where("name"), named.subject,
        )
    said: set[tuple] = set()
    for sv in pods:
        svc = sv.service
        doc = svc if svc.observability.access_log else mesh
        folders = envoy_folders(mesh, sv.mtls != "disable", sv.access_log, doc)
        seen = {SCRATCH: "/tmp (the sidecar's scratch folder)"}
        for what, folder, where, subject in folders:
            if folder == "/":
                message = f"{what} is '/': a pod's sidecar cannot mount a volume over its whole filesystem"
            elif folder in seen:
                message = (f"{what} is '{folder}', like {seen[folder]}: in a pod each needs a volume of its own "
                           "there (the ConfigMap, the certificate Secret, a writable folder); choose another folder")
            else:
                seen[folder] = what
                continue
            key = (where, message)
            if key not in said:  # a mesh-wide folder clashes in every pod: say it once
                said.add(key)
                yield Diagnostic("E403", message, where, subject)
