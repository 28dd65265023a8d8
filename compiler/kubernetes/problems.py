"""What stops the Kubernetes output from being written, found only once the files exist, as diagnostics
at the Service or Gateway (the meaning checks, compiler/check/pod_folders.py, say the rest before anything renders):

- E402 a sidecar's (or gateway's) files are more than a ConfigMap holds (1 MiB): Kubernetes would refuse it;
- E403 two of the sidecar's volumes at one folder, or one at `/`, when `--config-root` or `--certs-root`
  moved them there (the check sees the policy's folders, not the build's options).
"""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic
from compiler.ir import MeshIR, Sidecar
from compiler.kubernetes import layout
from compiler.kubernetes.gateway import mounts as gateway_mounts
from compiler.kubernetes.sidecar import mounts

CONFIGMAP_LIMIT = 1024 * 1024
"""Kubernetes refuses a ConfigMap whose values add up to more than this many bytes."""

_WHAT = {
    layout.VOLUME_CONFIG: "the config folder (config_dir, --config-root)",
    layout.VOLUME_CERTS: "the certificates folder (mtls.certs_dir, --certs-root)",
    layout.VOLUME_TMP: "/tmp (the sidecar's scratch folder)",
    layout.VOLUME_LOGS: "the access log's folder",
}


def problems(ir: MeshIR, sizes: dict[str, int]) -> Iterator[Diagnostic]:
    """`sizes`: service in pods -> the bytes of its sidecar files."""
    pods = [s for s in ir.sidecars if s.kubernetes is not None]
    gateways = [s for s in ir.sidecars if s.gateway is not None and s.gateway.kubernetes is not None]
    for s in pods + gateways:
        size = sizes.get(s.service, 0)
        subject = f"Gateway '{s.service}'" if s.gateway is not None else f"Service '{s.service}'"
        if size > CONFIGMAP_LIMIT:
            yield Diagnostic(
                "E402",
                f"the {'gateway' if s.gateway is not None else 'sidecar'}'s files add up to {size} bytes, more than a "
                f"ConfigMap holds ({CONFIGMAP_LIMIT}): Kubernetes would refuse ConfigMap "
                f"'{layout.configmap_name(s.service)}'; split the "
                f"{'gateway' if s.gateway is not None else 'service'}'s calls or routes",
                s.source, subject,
            )
        yield from _mount_clashes(s, gateway_mounts(s) if s.gateway is not None else mounts(s), subject)


def _what(name: str) -> str:
    if name.startswith(layout.VOLUME_CA.format(n="")):
        return "a folder of external CA bundles"
    return _WHAT.get(name, "a folder of edge TLS files")


def _mount_clashes(s: Sidecar, volumes, subject: str) -> Iterator[Diagnostic]:
    seen: dict[str, str] = {}
    for name, path, _ in volumes:
        folder = path.rstrip("/") or "/"
        if folder == "/":
            yield Diagnostic(
                "E403", f"{_what(name)} is '/': the sidecar cannot mount a volume over its whole filesystem",
                s.source, subject,
            )
        elif folder in seen:
            yield Diagnostic(
                "E403",
                f"{_what(name)} and {_what(seen[folder])} are both '{folder}': in a pod each needs a volume of "
                "its own there, and a folder holds one; choose different folders",
                s.source, subject,
            )
        else:
            seen[folder] = name
