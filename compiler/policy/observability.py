"""Observability without application code: metrics, tracing and access logs from every sidecar.

Set mesh-wide in `Mesh.observability`; a Service may override any part in its
own `observability` (fields it leaves out keep the mesh's value).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from compiler.policy.base import PolicyModel
from compiler.policy.types import UINT32_MAX, Duration, Name, NonEmpty, Percent, Port, duration_at_most


class Metrics(PolicyModel):
    """A Prometheus endpoint on its own listener (`:<port>/stats/prometheus`), apart from the admin interface."""

    port: Port = 15090
    """The Prometheus listener's port (`:<port>/stats/prometheus`)."""
    keep_prefixes: list[NonEmpty] = []
    """Only stats whose names start with one of these (Envoy `stats_matcher`); empty keeps all.
    Per-cluster stats dominate Envoy's memory in big meshes."""


def _not_empty(text: str) -> str:
    if not text:
        raise ValueError("a tracing tag's name and value cannot be empty (Envoy refuses it)")
    return text


_TagText = Annotated[str, AfterValidator(_not_empty)]


class Tracing(PolicyModel):
    """Spans from every sidecar, propagated with x-request-id and B3 (Zipkin) or W3C traceparent (OpenTelemetry)."""

    provider: Literal["zipkin", "opentelemetry"] = "zipkin"
    """`zipkin` (B3 headers, HTTP to the collector) or `opentelemetry` (W3C traceparent, gRPC to the collector)."""
    collector: Name
    """The collector, a Service of this mesh (Zipkin: HTTP on its port; OpenTelemetry: protocol grpc)."""
    sampling: Percent = 100
    """Share of the requests traced, 0-100 (Envoy `random_sampling`)."""
    tags: dict[_TagText, _TagText] = {}
    """Fixed tags added to every span (Envoy `custom_tags`: neither name nor value may be empty)."""


class AccessLog(PolicyModel):
    """One line per request on each sidecar it crosses."""

    to: Literal["stdout", "file"] = "stdout"
    """`stdout` (the container's log) or a `file` at `path`."""
    path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._/-]*$")
    """With `to: file`."""
    format: Literal["json", "text"] = "json"
    """`json` (one object per line) or `text` (one line of fields)."""
    only: Literal["all", "errors", "slow"] = "all"
    """errors: status >= 500 or a connection failure; slow: longer than `slow_over`."""
    slow_over: duration_at_most(UINT32_MAX, "Envoy compares it as a 32-bit count of milliseconds") = Duration(1_000)
    """With `only: slow`."""

    @model_validator(mode="after")
    def _meaningful(self) -> "AccessLog":
        # A setting that the chosen mode never reads would be silently ignored: refuse it instead.
        if self.to == "file" and self.path is None:
            raise ValueError("to: file needs a path")
        if self.to != "file" and self.path is not None:
            raise ValueError(f"path only applies to: file (this log goes to {self.to})")
        if self.only != "slow" and "slow_over" in self.model_fields_set:
            raise ValueError(f"slow_over only applies with only: slow (this log keeps only: {self.only})")
        return self


class Observability(PolicyModel):
    """Mesh-wide metrics, tracing and access logs; each part is off until it is given."""

    metrics: Metrics | None = None
    """A Prometheus endpoint on every sidecar (default: none)."""
    tracing: Tracing | None = None
    """Spans from every sidecar (default: none)."""
    access_log: AccessLog | None = None
    """An access log on every sidecar (default: none)."""


class ObservabilityOverride(PolicyModel):
    """Per-service overrides; `false` switches a part off for this service."""

    metrics: Metrics | Literal[False] | None = None
    """This service's metrics endpoint instead of the Mesh's; `false`: none."""
    tracing: Tracing | Literal[False] | None = None
    """This service's tracing instead of the Mesh's; `false`: none."""
    access_log: AccessLog | Literal[False] | None = None
    """This service's access log instead of the Mesh's; `false`: none."""
