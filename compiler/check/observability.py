"""Observability meaning: the tracing collector is a real service that speaks the provider's protocol."""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic, did_you_mean
from compiler.policy.resolved import Resolved


def check_observability(view: Resolved) -> Iterator[Diagnostic]:
    mesh = view.mesh
    if mesh is None:
        return
    services = view.services
    places = [(mesh, ("observability", "tracing"), mesh.observability.tracing)]
    places += [(svc, ("observability", "tracing"), svc.observability.tracing) for svc in view.policy.services]
    places += [(gw, ("observability", "tracing"), gw.observability.tracing) for gw in view.policy.gateways]
    for doc, path, tracing in places:
        if not tracing:
            continue
        collector = services.get(tracing.collector)
        where = doc.where(*path, "collector")
        if collector is None:
            yield Diagnostic(
                "E260",
                f"unknown tracing collector '{tracing.collector}'{did_you_mean(tracing.collector, sorted(services))}: "
                "declare it as a Service",
                where, doc.subject, "observability.tracing.collector",
            )
        elif tracing.provider == "opentelemetry" and collector.protocol != "grpc":
            yield Diagnostic(
                "E261",
                f"the OpenTelemetry collector '{collector.name}' must be a grpc service (OTLP over gRPC)",
                where, doc.subject, "observability.tracing.collector",
            )
        elif tracing.provider == "zipkin" and collector.protocol == "tcp":
            yield Diagnostic(
                "E261", f"the Zipkin collector '{collector.name}' must be an http service", where, doc.subject,
                "observability.tracing.collector",
            )
