"""Kubernetes mode: how sidecars of services running in pods find each other and run (Mesh `kubernetes`).

A service whose effective sidecar address is a wildcard (`0.0.0.0` or `::`,
the Mesh default) runs in pods. Its pods carry the labels `app: <service>` and
`version: <version>` (only `app` for a service without versions), and every
version is reachable by the name of a headless Service, `<service>-<version>`,
whose DNS records are exactly that version's pod IPs. Callers resolve that
name themselves (Envoy STRICT_DNS clusters), so no control plane is needed:
pods that come and go are followed by DNS, with no rebuild.

These settings are read in two places: the sidecars' Envoy configuration
(cluster names and refresh, the readiness listener) and the Kubernetes
manifests under `out/kubernetes/` (image, resources, shutdown, Secret names).
Services with a specific sidecar address stay one-host and ignore them.
"""

from __future__ import annotations

import re

from typing import Annotated

from pydantic import AfterValidator, field_validator, model_validator

from compiler.policy.base import PolicyModel
from compiler.policy.types import Duration, Port

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A Kubernetes object name that must be a DNS label (RFC 1123): Services, and here Secrets too."""

CPU_QUANTITY = r"^(0|[1-9][0-9]*)(\.[0-9]{1,3}|m)?$"
"""CPU: cores (`1`, `0.5`) or millicores (`100m`)."""

MEMORY_QUANTITY = r"^(0|[1-9][0-9]*)(Ki|Mi|Gi|Ti|k|M|G|T)?$"
"""Memory: bytes with a binary (`128Mi`) or decimal (`128M`) suffix, or none."""

IMAGE = (
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._-]|__|/)[a-z0-9]+)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
"""A container image reference: `[registry[:port]/]repository[:tag][@sha256:digest]`."""



def _text(pattern: str, what: str):
    """A string type that must match `pattern`; the error says what was expected, not the pattern."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return Annotated[str, AfterValidator(check)]


CpuQuantity = _text(CPU_QUANTITY, "a CPU quantity: cores (1, 0.5) or millicores (100m)")
MemoryQuantity = _text(MEMORY_QUANTITY, "a memory quantity: bytes with a suffix such as 128Mi, 1Gi or 500M")
DnsDomain = _text(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", "a DNS domain in lowercase, e.g. cluster.local")
ImageRef = _text(IMAGE, "a container image such as envoyproxy/envoy:v1.40.0 or registry:5000/envoy@sha256:<digest>")

DNS_MARGIN = Duration(5_000)
"""How long after the callers' DNS refresh a pod that is going away may still get requests: the cluster
DNS's record TTL (CoreDNS: 5 s, callers honour TTLs) and the time the control plane takes to drop a
terminating pod from DNS. A leaving pod's sidecar keeps serving for dns_refresh + this, then drains."""

_MEMORY_FACTOR = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def cpu_millis(quantity: str) -> int:
    """A CPU quantity in millicores: `100m` -> 100, `0.5` -> 500, `2` -> 2000."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    whole, _, fraction = quantity.partition(".")
    return int(whole) * 1000 + int((fraction + "000")[:3])


def memory_bytes(quantity: str) -> int:
    """A memory quantity in bytes: `128Mi` -> 134217728."""
    m = re.match(r"^([0-9]+)([A-Za-z]*)$", quantity)
    assert m, quantity
    return int(m.group(1)) * _MEMORY_FACTOR[m.group(2)]


class ResourceList(PolicyModel):
    """CPU and memory of the sidecar container (Kubernetes `resources.requests` or `.limits`)."""

    cpu: CpuQuantity | None = None
    """Cores (`1`, `0.5`) or millicores (`100m`)."""
    memory: MemoryQuantity | None = None
    """Bytes, e.g. `128Mi` (binary) or `128M` (decimal)."""


class Resources(PolicyModel):
    """The sidecar container's resources. The defaults reserve 0.1 core and 128 MiB and cap memory at
    256 MiB; no CPU limit, so a busy sidecar is slowed by its request share, not throttled to a ceiling.
    A `requests` or `limits` written in the policy replaces that default list whole (what is written is
    what the pod gets)."""

    requests: ResourceList = ResourceList(cpu="100m", memory="128Mi")
    """What the scheduler reserves for the sidecar on a node."""
    limits: ResourceList = ResourceList(memory="256Mi")
    """The most it may use (memory beyond it kills the container: Envoy's overload limits stay below)."""

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> "Resources":
        # Kubernetes refuses a pod whose request exceeds its limit; say so here, at the field.
        req, lim = self.requests, self.limits
        if req.cpu and lim.cpu and cpu_millis(req.cpu) > cpu_millis(lim.cpu):
            raise ValueError(f"requests.cpu {req.cpu} is more than limits.cpu {lim.cpu}")
        if req.memory and lim.memory and memory_bytes(req.memory) > memory_bytes(lim.memory):
            raise ValueError(f"requests.memory {req.memory} is more than limits.memory {lim.memory}")
        return self


class Kubernetes(PolicyModel):
    """Settings of the services that run in pods (sidecar address a wildcard); ignored by one-host services."""

    cluster_domain: DnsDomain = "cluster.local"
    """The cluster's DNS domain (kubelet `--cluster-domain`). Callers resolve each version of a service as
    `<service>-<version>.<namespace>.svc.<cluster_domain>` (Envoy STRICT_DNS cluster address), a fully
    qualified name, so no resolver search list is involved."""

    dns_refresh: Duration = Duration(5_000)
    """How often a caller's sidecar re-resolves each version's name (Envoy cluster `dns_refresh_rate`): a
    pod that starts or goes away is seen within this time. The records' TTL is honoured too
    (`respect_dns_ttl`): a shorter TTL makes Envoy re-resolve sooner. At least 100ms."""

    image: ImageRef = "envoyproxy/envoy:v1.40.0"
    """The sidecar container's image (manifests only). The default is the Envoy version meshc is tested
    with; the output uses Envoy features of that version."""

    probe_port: Port = 15021
    """The readiness listener, on every interface of the pod: answers `GET /ready` with Envoy's readiness
    (200 once its configuration is loaded; 503 while it starts or after `/healthcheck/fail`) and 404 to
    anything else;
    the admin interface stays on loopback. The manifests point the sidecar's readiness and liveness
    probes here. Must differ from the service's other ports (E212)."""

    resources: Resources = Resources()
    """The sidecar container's resource requests and limits (manifests only)."""

    shutdown_grace: Duration = Duration(20_000)
    """How long a pod that is going away has before it is killed (pod `terminationGracePeriodSeconds`,
    whole seconds): the sidecar stops being ready, then drains its connections (Envoy drain time) before
    it exits. Must be longer than `dns_refresh` + 5 s (DNS_MARGIN) + the sidecar's drain time (E294)."""

    certs_secret: str = "meshc-certs-{service}"
    """Name of the Secret that holds a service's certificate (cert.pem, key.pem, ca.pem), mounted at
    `mtls.certs_dir` when mTLS is on (manifests only); `{service}` is replaced by the service's name.
    The resulting name must be a DNS label (E292 names a service for which it is too long)."""

    @field_validator("dns_refresh")
    @classmethod
    def _refresh_floor(cls, value: Duration) -> Duration:
        if value.ms < 100:
            raise ValueError(f"dns_refresh {value} is too short: at least 100ms (every caller queries DNS this often)")
        return value

    @field_validator("shutdown_grace")
    @classmethod
    def _whole_seconds(cls, value: Duration) -> Duration:
        if value.ms % 1000:
            raise ValueError(f"shutdown_grace {value} is not whole seconds (terminationGracePeriodSeconds)")
        return value

    @field_validator("certs_secret")
    @classmethod
    def _secret_pattern(cls, value: str) -> str:
        if "{service}" not in value:
            raise ValueError(f"{value!r} must contain {{service}}: each service has its own certificate")
        sample = value.replace("{service}", "a")
        if not DNS_LABEL.match(sample):
            raise ValueError(
                f"{value!r} does not make a DNS label: lowercase letters, digits and '-' around {{service}}, "
                "starting and ending with a letter or digit"
            )
        return value

    def certs_secret_of(self, service: str) -> str:
        """The name of `service`'s certificate Secret."""
        return self.certs_secret.replace("{service}", service)
