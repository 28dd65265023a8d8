"""Kubernetes: the ConfigMaps a caller's pods read ExternalService CA bundles from, and their names.

A caller's sidecar verifies an external server against the PEM bundle at `tls.ca`, read through file SDS
with its folder watched (compiler/emit/external.py). In pods that file comes from a ConfigMap the user
creates (a CA bundle holds no key: trust-manager's Bundles and `kubectl create configmap --from-file`
both write ConfigMaps), in the namespace of each caller in pods:

- ConfigMap `<external>-ca`, key = the file's base name (`tls.ca: /etc/meshc/external/payments/ca.pem`:
  ConfigMap `payments-ca`, key `ca.pem`). ExternalServices whose `tls.ca` is one file share one
  ConfigMap, named after the first of them by name.
- In the pods of the services (and gateways) whose sidecar originates TLS to it, the CA files of one
  folder are one read-only projected volume of their ConfigMaps at that folder: exactly those keys,
  under the file names the policy gives. Kubelet updates it by swapping the folder's `..data` link,
  which the watched folder sees: a bundle changed in the ConfigMap applies without a restart.

Read by the checks (compiler/check/kubernetes_external.py: folders, keys) and by the lowering
(compiler/lower/kubernetes.py: the IR the manifests mount).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from compiler.policy.external import ExternalService

if TYPE_CHECKING:
    from compiler.policy.resolved import Resolved

SUFFIX = "-ca"


@dataclass(frozen=True)
class CaConfigMap:
    name: str
    """The ConfigMap: `<external>-ca` of the first ExternalService (by name) whose `tls.ca` is this file."""
    key: str
    """Its key: the file's base name."""
    path: str
    """The file in the pod (`tls.ca`)."""
    external: ExternalService
    """The ExternalService it is named after (where the policy names the file: `.where("tls", "ca")`)."""

    @property
    def folder(self) -> str:
        """The folder the volume is mounted at, and Envoy watches."""
        return posixpath.dirname(self.path) or "/"


def configmap_name(external: str) -> str:
    """`payments` -> `payments-ca`."""
    return f"{external}{SUFFIX}"


def ca_configmaps(externals: Iterable[ExternalService]) -> dict[str, CaConfigMap]:
    """`tls.ca` path -> the ConfigMap it is read from, for every ExternalService with `tls` (mesh-wide, so a
    ConfigMap's name does not depend on who calls what)."""
    out: dict[str, CaConfigMap] = {}
    for ext in sorted((e for e in externals if e.tls is not None), key=lambda e: e.name):
        path = ext.tls.ca
        out.setdefault(path, CaConfigMap(configmap_name(ext.name), posixpath.basename(path), path, ext))
    return out


def reached_with_tls(view: "Resolved", destinations: Iterable[str]) -> list[str]:
    """The ExternalServices with `tls` a sidecar originates TLS to, sorted: the `destinations` it forwards
    to (a service's `calls`, a gateway's route targets) that are ExternalServices, and those their Routes
    mirror to (the caller's sidecar sends the copies)."""
    out: set[str] = set()
    for dest in destinations:
        targets = [dest]
        route = view.routes.get(dest)
        if route is not None:
            targets += [m.service or dest for rule in route.rules for m in rule.mirror]
        for name in targets:
            ev = view.externals.get(name)
            if ev is not None and ev.service.tls is not None:
                out.add(name)
    return sorted(out)
