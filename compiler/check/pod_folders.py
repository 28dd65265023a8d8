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
"""

from __future__ import annotations

import posixpath
from typing import Iterator

from compiler.diagnostics import Diagnostic
from compiler.policy.resolved import Resolved

OUTPUT_FOLDER = "kubernetes"  # compiler.kubernetes.layout.DIR
SCRATCH = "/tmp"  # the sidecar's emptyDir (compiler.kubernetes.sidecar)


def _folder(path: str) -> str:
    return path.rstrip("/") or "/"


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
        folders = [("config_dir", _folder(mesh.config_dir), mesh.where("config_dir"), mesh.subject)]
        if sv.mtls != "disable":
            folders.append(("mtls.certs_dir", _folder(mesh.mtls.certs_dir), mesh.where("mtls", "certs_dir"), mesh.subject))
        log = sv.access_log
        if log is not None and log.to == "file" and log.path:
            doc = svc if svc.observability.access_log else mesh
            folder = _folder(posixpath.dirname(log.path.rstrip("/")) or "/")
            if folder != SCRATCH:
                folders.append(("the access log's folder", folder, doc.where("observability", "access_log", "path"),
                                doc.subject))
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
