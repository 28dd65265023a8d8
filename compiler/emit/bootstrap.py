"""The typed parameters of the bootstrap template (templates/bootstrap.yaml.j2).

The template is the skeleton (node, admin, runtime, overload limits, where
the dynamic resources come from); everything structural is built here as
data and passed in, so the template never decides content or order.

Envoy reads a bootstrap only when it starts, so it holds nothing a policy
changes day to day: listeners and clusters come from listeners.yaml and
clusters.yaml (file-based LDS and CDS in a watched directory), and a change
to this file is a restart (the build report says so, and why).
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.emit import edge, names
from compiler.emit.common import file_source
from compiler.ir import Sidecar


ENVOY_ARGS = ("--drain-strategy", "immediate", "--drain-time-s", "5")
"""How a sidecar must be started, besides `-c <config_dir>/bootstrap.yaml` (docker-compose, the tests).

A listener change from listeners.yaml (authorization, JWT, TLS mode) applies to new connections at
once; connections opened before it are drained. With Envoy's defaults (gradual, 600 s) a quiet
keep-alive connection — a caller sidecar's pooled connection — could keep the old policy for minutes.
`immediate` closes each such connection after its next response (HTTP/1 `Connection: close`, HTTP/2
GOAWAY), and what is still open after 5 s is closed.
"""


@dataclass(frozen=True)
class BootstrapParams:
    node_id: str
    node_cluster: str
    node_metadata: dict
    admin_address: str
    admin_port: int
    listeners: list[dict]  # --static only (otherwise listeners.yaml)
    static_clusters: list[dict]  # --static only (otherwise clusters.yaml)
    static_secrets: list[dict]  # --static with mTLS: the certificate file names
    cds_config: dict | None  # dynamic: clusters.yaml through a file config source
    lds_config: dict | None  # dynamic: listeners.yaml through a file config source
    stats_patterns: list[dict] | None = None  # stats_matcher inclusion list (None: keep all stats)
    max_downstream_connections: int = 50_000
    runtime: dict | None = None  # static runtime layer: a gateway's per-listener connection limits


def bootstrap_params(
    s: Sidecar, listeners: list[dict], static_clusters: list[dict], static_secrets: list[dict], static: bool
) -> BootstrapParams:
    return BootstrapParams(
        node_id=names.node_id(s),
        node_cluster=s.service,
        # No provenance here: moving a Service to another policy file must not restart its sidecar
        # (its resources in listeners.yaml / clusters.yaml carry the anchors, and those reload).
        node_metadata={"mesh": s.mesh, "service": s.service},
        admin_address=s.admin_address,
        admin_port=s.admin_port,
        listeners=listeners,
        static_clusters=static_clusters,
        static_secrets=static_secrets,
        stats_patterns=[{"prefix": p} for p in s.metrics.keep_prefixes] if s.metrics and s.metrics.keep_prefixes else None,
        cds_config=None if static else file_source(names.config_path(s, names.CLUSTERS_FILE), s.config_dir),
        lds_config=None if static else file_source(names.config_path(s, names.LISTENERS_FILE), s.config_dir),
        # Envoy reads a listener's connection limit from runtime when it builds the listener.
        runtime=edge.runtime(s) or None,
    )
