"""Kubernetes: the Secrets a gateway in pods reads its edge TLS files from, and their names.

Keys never go into the output: each certificate the gateway serves, and each client CA bundle, is read
from a Secret the user creates (cert-manager, or `kubectl create secret tls`), projected into the folder
the policy names under the file name it gives. Read by the checks (names, clashes) and by the lowering.

- A certificate (`listeners[].tls.certificates[]`): a `kubernetes.io/tls` Secret
  `<gateway>-tls-<first host>` (`*.` becomes `wildcard.`), keys `tls.crt` and `tls.key`. The same
  files served on two listeners are one Secret.
- A client CA bundle (`listeners[].tls.client_ca`): Secret `<gateway>-client-ca-<listener>`, key `ca.crt`,
  named after the first listener that names that file.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.policy.gateway import Gateway

TLS_CERT, TLS_KEY, CA_CERT = "tls.crt", "tls.key", "ca.crt"
"""The keys of a `kubernetes.io/tls` Secret, and of a CA bundle (as cert-manager writes them)."""


@dataclass(frozen=True)
class EdgeSecret:
    name: str
    files: tuple[tuple[str, str], ...]
    """(key in the Secret, path in the pod)."""
    path: tuple
    """Where the policy names it (Gateway.where(*path)): a certificate, or a listener's client_ca."""


def tls_secret_name(gateway: str, host: str) -> str:
    """`ingress` serving `*.example.com` first -> `ingress-tls-wildcard.example.com`."""
    return f"{gateway}-tls-{'wildcard.' + host[2:] if host.startswith('*.') else host}"


def client_ca_secret_name(gateway: str, listener: str) -> str:
    return f"{gateway}-client-ca-{listener}"


def edge_secrets(gw: Gateway) -> list[EdgeSecret]:
    """Every Secret the gateway's pods read, in the gateway's order, the same files once. Two entries of
    one name with different files are a clash the check refuses (E405)."""
    out: list[EdgeSecret] = []
    seen: set[tuple] = set()
    for i, listener in enumerate(gw.listeners):
        tls = listener.tls
        if tls is None or listener.protocol != "https":
            continue  # only an https listener reads TLS files
        for j, cert in enumerate(tls.certificates):
            files = ((TLS_CERT, cert.cert), (TLS_KEY, cert.key))
            if files not in seen:
                seen.add(files)
                out.append(EdgeSecret(tls_secret_name(gw.name, cert.hosts[0]), files,
                                      ("listeners", i, "tls", "certificates", j)))
        if tls.client_ca is not None:
            files = ((CA_CERT, tls.client_ca),)
            if files not in seen:
                seen.add(files)
                out.append(EdgeSecret(client_ca_secret_name(gw.name, listener.name), files,
                                      ("listeners", i, "tls", "client_ca")))
    return out
