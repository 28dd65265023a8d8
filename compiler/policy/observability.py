"""Observability without application code: metrics, tracing and access logs from every sidecar.

Set mesh-wide in `Mesh.observability`; a Service may override any part in its
own `observability` (fields it leaves out keep the mesh's value).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compiler.policy.base import PolicyModel
from compiler.policy.types import Duration, Name, Percent, Port


class Metrics(PolicyModel):
    """A Prometheus endpoint on its own listener (`:<port>/stats/prometheus`), apart from the admin interface."""

    port: Port = 15090
    keep_prefixes: list[str] = []
    """Only stats whose names start with one of these (Envoy `stats_matcher`); empty keeps all.
    Per-cluster stats dominate Envoy's memory in big meshes."""


class Tracing(PolicyModel):
    """Spans from every sidecar, propagated with x-request-id and B3 (Zipkin) or W3C traceparent (OpenTelemetry)."""

    provider: Literal["zipkin", "opentelemetry"] = "zipkin"
    collector: Name
    """The collector, a Service of this mesh (Zipkin: HTTP on its port; OpenTelemetry: protocol grpc)."""
    sampling: Percent = 100
    tags: dict[str, str] = {}
    """Fixed tags added to every span."""


class AccessLog(PolicyModel):
    """One line per request on each sidecar it crosses."""

    to: Literal["stdout", "file"] = "stdout"
    path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._/-]*$")
    """With `to: file`."""
    format: Literal["json", "text"] = "json"
    only: Literal["all", "errors", "slow"] = "all"
    """errors: status >= 500 or a connection failure; slow: longer than `slow_over`."""
    slow_over: Duration = Duration(1_000)


class Observability(PolicyModel):
    metrics: Metrics | None = None
    tracing: Tracing | None = None
    access_log: AccessLog | None = None


class ObservabilityOverride(PolicyModel):
    """Per-service overrides; `false` switches a part off for this service."""

    metrics: Metrics | Literal[False] | None = None
    tracing: Tracing | Literal[False] | None = None
    access_log: AccessLog | Literal[False] | None = None
