"""The policy language: Mesh and Service (Route lives in route.py).

These models are the language's reference: YAML documents and Python policy
files both produce exactly these objects. Docstrings say what Envoy ends up
doing with each field.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from compiler.policy.analysis import Analysis
from compiler.policy.base import Document, PolicyModel
from compiler.policy.external import Egress, ExternalService
from compiler.policy.gateway import Gateway
from compiler.policy.kubernetes import Kubernetes
from compiler.policy.observability import Observability, ObservabilityOverride
from compiler.policy.paths import Paths
from compiler.policy.route import Route
from compiler.policy.security import Authorization, AuthorizationPolicy, Mtls, MtlsMode, RequestAuthentication
from compiler.policy.traffic import ConnectionPool, OutlierDetection, TrafficPolicy
from compiler.policy.types import Duration, Endpoint, IPAddress, Name, Port, PositiveDuration

# --------------------------------------------------------------------------
# Mesh
# --------------------------------------------------------------------------


class Defaults(PolicyModel):
    """Mesh-wide request defaults, used wherever a policy says nothing."""

    timeout: Duration = Duration(15_000)
    """Whole-request timeout of a route (Envoy `route.timeout`); 504 when it expires."""

    connect_timeout: PositiveDuration = Duration(1_000)
    """TCP connect timeout of every cluster (Envoy `cluster.connect_timeout`)."""

    connection_pool: ConnectionPool = ConnectionPool()
    """Limits of every cluster unless its TrafficPolicy says otherwise (see README: safe defaults)."""

    outlier_detection: OutlierDetection = OutlierDetection()
    """Every cluster ejects failing instances unless its TrafficPolicy says otherwise."""


class SidecarDefaults(PolicyModel):
    """Where sidecars listen when a Service does not say.

    The defaults suit Kubernetes, where every pod has its own network namespace
    and all sidecars can share the same ports.
    """

    address: IPAddress = "0.0.0.0"
    """Listen address of the inbound and outbound listeners."""

    outbound_port: Port = 15001
    """The local app sends its outbound calls here (`Host: <service>`)."""

    admin_port: Port = 15000
    """Envoy's admin interface; always bound to a loopback address."""


class Mesh(Document):
    """Exactly one per policy directory: the mesh's name and defaults."""

    kind: Literal["Mesh"] = "Mesh"
    name: Name
    """The mesh's name."""
    defaults: Defaults = Defaults()
    """Request and cluster defaults wherever a policy says nothing."""
    sidecar: SidecarDefaults = SidecarDefaults()
    """Where sidecars listen unless a Service says otherwise."""
    config_dir: str = Field(default="/etc/meshc", pattern=r"^/[A-Za-z0-9._/-]*$")
    """Where each sidecar finds its own output folder (`out/<service>/` is mounted here)."""
    trust_domain: str = Field(default="cluster.local", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    """The SPIFFE trust domain of every identity in the mesh."""
    mtls: Mtls = Mtls()
    """Mutual TLS between sidecars."""
    authorization: Authorization = Authorization()
    """Whether services without an AuthorizationPolicy take every request."""
    observability: Observability = Observability()
    """Metrics, tracing and access logs of every sidecar (a Service may override each part)."""
    paths: Paths = Paths()
    """Path normalisation on every sidecar and how security rules compare paths (see compiler/policy/paths.py)."""
    egress: Egress = Egress()
    """Calls to hosts that no Service or ExternalService declares: refused (default) or allowed."""
    kubernetes: Kubernetes = Kubernetes()
    """Services running in pods (sidecar address a wildcard): discovery, readiness, manifests (see
    compiler/policy/kubernetes.py)."""
    analysis: Analysis = Analysis()
    """Thresholds of the mesh-wide resilience analysis (warnings W601-W604; see compiler/policy/analysis.py)."""


# --------------------------------------------------------------------------
# Service
# --------------------------------------------------------------------------


class Version(PolicyModel):
    """A named subset of a service (Envoy: one cluster per version)."""

    endpoints: list[Endpoint] = []
    """Instances of this version (`host:port`). None listed: the app on `127.0.0.1:<app_port>` (the
    Service's `app_port` is then required)."""


class SidecarSettings(PolicyModel):
    """Per-service overrides of the mesh's sidecar defaults.

    On one host (a laptop, tests, Docker with host networking) give each
    service its own loopback address (127.0.0.x) so that all sidecars can use
    the same port numbers side by side.
    """

    address: IPAddress | None = None
    """This sidecar's listen address; default: the Mesh's `sidecar.address`."""
    outbound_port: Port | None = None
    """Where this service's app sends its calls; default: the Mesh's `sidecar.outbound_port`."""
    admin_port: Port | None = None
    """This sidecar's admin interface; default: the Mesh's `sidecar.admin_port`."""


class Service(Document):
    """A workload that gets a sidecar.

    The sidecar has an inbound listener on `port` that delivers to the
    service's versions, and an outbound listener that routes the app's calls
    to the services named in `calls`.
    """

    kind: Literal["Service"] = "Service"
    name: Name
    """The service's name: the Host its callers use, and its sidecar's output folder."""
    protocol: Literal["http", "grpc", "tcp"] = "http"
    """`http` (HTTP/1.1 to the app), `grpc` (HTTP/2 to the app), `tcp` (opaque bytes)."""
    port: Port
    """The port callers use: the sidecar's inbound listener."""
    app_port: Port | None = None
    """The loopback port of the app behind this sidecar: the one endpoint, `127.0.0.1:<app_port>`, of
    every version that lists no `endpoints` (and of the one version `default` of a service without
    `versions`). Needed exactly then: without it such a version has nowhere to send its traffic
    (E215); when every version lists its endpoints it would be ignored, so it is refused (E281)."""
    versions: dict[Name, Version] = {}
    """Named subsets; a service with none has one version called `default`."""
    default_version: Name | None = None
    """Version that receives traffic no Route sends elsewhere. Default: the first version."""
    calls: list[Name] = []
    """Dependencies: the sidecar gets outbound config for these services only."""
    namespace: Name = "default"
    """Part of its identity; in Kubernetes, where its pods and Services go."""
    service_account: Name | None = None
    """Identity: spiffe://<trust_domain>/ns/<namespace>/sa/<service_account or name>."""
    mtls: MtlsMode | None = None
    """Overrides the Mesh's `mtls.mode` for this service's inbound side (and its own calls, when `disable`)."""
    sidecar: SidecarSettings = SidecarSettings()
    """Where this service's sidecar listens, if not where the Mesh says."""
    observability: ObservabilityOverride = ObservabilityOverride()
    """This service's metrics, tracing and access log, over the Mesh's."""

    @field_validator("calls")
    @classmethod
    def _calls_unique(cls, calls: list[str]) -> list[str]:
        seen = set()
        for name in calls:
            if name in seen:
                raise ValueError(f"'{name}' is listed twice")
            seen.add(name)
        return calls

    @property
    def version_names(self) -> list[str]:
        return list(self.versions) or ["default"]

    @property
    def effective_default_version(self) -> str:
        return self.default_version or self.version_names[0]

    def uses_app_port(self, version: str) -> bool:
        """Whether `version` lists no endpoints, so that it is the app on `127.0.0.1:<app_port>`."""
        spec = self.versions.get(version)
        return not (spec and spec.endpoints)

    def endpoints_of(self, version: str) -> list[Endpoint]:
        """The version's own endpoints, else the app on `127.0.0.1:<app_port>` (none without an `app_port`)."""
        if not self.uses_app_port(version):
            return list(self.versions[version].endpoints)
        return [Endpoint("127.0.0.1", self.app_port)] if self.app_port is not None else []


PolicyDocument = Annotated[
    Union[
        Mesh, Service, Route, TrafficPolicy, AuthorizationPolicy, RequestAuthentication, Gateway, ExternalService
    ],
    Field(discriminator="kind"),
]
KINDS = (
    "Mesh", "Service", "Route", "TrafficPolicy", "AuthorizationPolicy", "RequestAuthentication", "Gateway",
    "ExternalService",
)
