"""The policy language: typed models, importable from Python policy files.

    from compiler.policy import Mesh, Service, Route, RouteRule, Version
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.policy.analysis import Analysis
from compiler.policy.base import Document
from compiler.policy.models import (
    KINDS,
    Defaults,
    Mesh,
    PolicyDocument,
    Service,
    SidecarDefaults,
    SidecarSettings,
    Version,
)
from compiler.policy.route import (
    Abort,
    Backoff,
    CookieMatch,
    Cors,
    Delay,
    Fault,
    HeaderChanges,
    HeaderMatch,
    Match,
    Mirror,
    PathMatch,
    QueryMatch,
    Redirect,
    RegexRewrite,
    Respond,
    Retries,
    RetryBudget,
    RetryStatusCodes,
    Rewrite,
    Route,
    RouteRule,
)
from compiler.policy.external import Egress, ExternalService, ExternalTls
from compiler.policy.gateway import EdgeCertificate, EdgeLimits, Gateway, GatewayListener, GatewayRoute, GatewayTls
from compiler.policy.kubernetes import Kubernetes, ResourceList, Resources
from compiler.policy.observability import AccessLog, Metrics, Observability, ObservabilityOverride, Tracing
from compiler.policy.paths import Paths
from compiler.policy.security import (
    Authorization,
    AuthorizationPolicy,
    AuthzRule,
    JwtProvider,
    JwtRule,
    Mtls,
    RequestAuthentication,
    TokenHeader,
)
from compiler.policy.traffic import (
    ConnectionPool,
    GlobalRateLimit,
    HashOn,
    HealthCheck,
    LoadBalancer,
    OutlierDetection,
    RateLimit,
    SuccessRate,
    TrafficPolicy,
    VersionLoadBalancer,
    VersionTraffic,
)
from compiler.policy.types import Duration, Endpoint


@dataclass(frozen=True)
class PolicySet:
    """Everything loaded from one policy directory, in a stable order (file, then position)."""

    documents: tuple[Document, ...]

    @property
    def meshes(self) -> list[Mesh]:
        return [d for d in self.documents if isinstance(d, Mesh)]

    @property
    def services(self) -> list[Service]:
        return [d for d in self.documents if isinstance(d, Service)]

    @property
    def routes(self) -> list[Route]:
        return [d for d in self.documents if isinstance(d, Route)]

    @property
    def request_authentications(self) -> list[RequestAuthentication]:
        return [d for d in self.documents if isinstance(d, RequestAuthentication)]

    @property
    def authorization_policies(self) -> list[AuthorizationPolicy]:
        return [d for d in self.documents if isinstance(d, AuthorizationPolicy)]

    @property
    def gateways(self) -> list[Gateway]:
        return [d for d in self.documents if isinstance(d, Gateway)]

    @property
    def external_services(self) -> list[ExternalService]:
        return [d for d in self.documents if isinstance(d, ExternalService)]

    @property
    def traffic_policies(self) -> list[TrafficPolicy]:
        return [d for d in self.documents if isinstance(d, TrafficPolicy)]


__all__ = [
    "Analysis",
    "EdgeCertificate",
    "EdgeLimits",
    "Egress",
    "ExternalService",
    "ExternalTls",
    "Gateway",
    "GatewayListener",
    "GatewayRoute",
    "GatewayTls",
    "KINDS",
    "Kubernetes",
    "ResourceList",
    "Resources",
    "AccessLog",
    "Metrics",
    "Observability",
    "ObservabilityOverride",
    "Tracing",
    "Authorization",
    "AuthorizationPolicy",
    "AuthzRule",
    "JwtProvider",
    "JwtRule",
    "Mtls",
    "RequestAuthentication",
    "TokenHeader",
    "ConnectionPool",
    "GlobalRateLimit",
    "HashOn",
    "HealthCheck",
    "LoadBalancer",
    "OutlierDetection",
    "RateLimit",
    "SuccessRate",
    "TrafficPolicy",
    "VersionLoadBalancer",
    "VersionTraffic",
    "Abort",
    "Backoff",
    "CookieMatch",
    "Cors",
    "Delay",
    "Fault",
    "HeaderChanges",
    "Mirror",
    "QueryMatch",
    "Redirect",
    "RegexRewrite",
    "Respond",
    "Retries",
    "RetryBudget",
    "RetryStatusCodes",
    "Rewrite",
    "Defaults",
    "Document",
    "Duration",
    "Endpoint",
    "HeaderMatch",
    "Match",
    "Mesh",
    "PathMatch",
    "Paths",
    "PolicyDocument",
    "PolicySet",
    "Route",
    "RouteRule",
    "Service",
    "SidecarDefaults",
    "SidecarSettings",
    "Version",
]
