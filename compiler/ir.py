"""The mesh IR: what every sidecar must do, in mesh terms, not Envoy terms.

Lowering (policy -> IR) decides *what* each sidecar does; emitting (IR ->
Envoy) decides *how Envoy says it*. The IR is plain frozen data, sorted when
it leaves the lowering, and every node remembers the policy place it came
from (`source`: a position, and the anchor the output records). Nodes that
many sidecars share (a dependency's clusters and virtual host) are the same
object in each sidecar, so the emitter builds them once. `meshc build
--dump-ir FILE` writes it as JSON. Clusters are in compiler/ir_cluster.py, a gateway's edge settings in
compiler/ir_edge.py, a pod's in compiler/ir_kubernetes.py; all re-exported here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Union

from compiler.diagnostics import Source
from compiler.ir_cluster import (  # noqa: F401 (re-exported)
    Direction,
    Protocol,
    RetryBudget,
    Outlier,
    HealthCheck,
    HashKey,
    Protection,
    ConnectionLife,
    TokenBucket,
    UpstreamTls,
    SidecarTls,
    Dns,
    OriginateTls,
    Cluster,
    Target,
)
from compiler.ir_edge import Edge, GatewaySpec
from compiler.ir_kubernetes import KubernetesCaBundle, KubernetesSidecar, KubernetesVersion  # noqa: F401 (re-exported)
from compiler.policy.types import Duration, Endpoint

CALLER_VERSION_ENV = "MESHC_VERSION"
"""In pods: the sidecar's environment variable holding its pod's version (the pod's `version` label). An outbound
listener with `caller_version` copies it into each connection's filter state (CALLER_VERSION_KEY), where the
routes with `caller_versions` match it: the app cannot forge it, and requests carry nothing new."""
CALLER_VERSION_KEY = "meshc.caller_version"


@dataclass(frozen=True)
class PathCondition:
    """A condition on the request path (without the query string).

    `prefix` is a string prefix (routing: `/api` matches `/apis`); `path_prefix` is a path prefix (security
    rules): `value` itself or anything under `value/`, segment by segment, so `/admin` never matches
    `/administrator` (a `value` ending in `/`, or `/` itself, is a plain prefix). `ignore_case` compares
    letters case-insensitively.
    """

    kind: Literal["prefix", "path_prefix", "exact", "regex"]
    value: str
    ignore_case: bool = False


@dataclass(frozen=True)
class HeaderCondition:
    name: str
    kind: Literal["exact", "prefix", "regex", "present", "absent"]
    value: str = ""


@dataclass(frozen=True)
class QueryCondition:
    name: str
    kind: Literal["exact", "prefix", "regex", "present"]
    value: str = ""


@dataclass(frozen=True)
class Mirror:
    """Copy `percent` of the requests to `cluster`; the answer is dropped."""

    cluster: Cluster
    percent: int | float  # up to 4 decimals: Envoy's MILLION denominator when not whole
    set_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Retry:
    attempts: int
    per_try_timeout: Duration | None
    conditions: tuple[str, ...]
    status_codes: tuple[int, ...]
    backoff_base: Duration
    backoff_max: Duration


@dataclass(frozen=True)
class Fault:
    delay: Duration | None
    delay_percent: int | float  # percentages: whole, or up to 4 decimals (Envoy's MILLION denominator)
    abort_status: int | None
    abort_grpc_status: int | None
    abort_percent: int | float
    headers: tuple[HeaderCondition, ...]


@dataclass(frozen=True)
class Rewrite:
    prefix: str | None = None
    regex: tuple[str, str] | None = None  # (pattern, substitution)
    host: str | None = None


@dataclass(frozen=True)
class HeaderOps:
    add: tuple[tuple[str, str], ...] = ()
    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.set or self.remove)


@dataclass(frozen=True)
class Cors:
    origins_exact: tuple[str, ...]
    origins_regex: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    max_age: Duration | None
    credentials: bool


@dataclass(frozen=True)
class Redirect:
    scheme: str | None
    host: str | None
    port: int | None
    path: str | None
    prefix: str | None
    code: int


@dataclass(frozen=True)
class Respond:
    status: int
    body: str


@dataclass(frozen=True)
class HttpRoute:
    """One route: conditions, then exactly one of forward (targets), redirect or respond."""

    path: PathCondition
    headers: tuple[HeaderCondition, ...]
    source: Source
    query: tuple[QueryCondition, ...] = ()
    targets: tuple[Target, ...] = ()
    timeout: Duration | None = None
    idle_timeout: Duration | None = None
    retry: Retry | None = None
    mirrors: tuple[Mirror, ...] = ()
    fault: Fault | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    cors: Cors | None = None
    redirect: Redirect | None = None
    respond: Respond | None = None
    hash_key: HashKey | None = None
    rate_limit: TokenBucket | None = None
    websocket: bool = False  # WebSocket upgrades pass (TrafficPolicy websockets of the destination)
    caller_versions: tuple[str, ...] = ()  # only calls from these versions of the sidecar's own service (in pods)


@dataclass(frozen=True)
class VirtualHost:
    """Requests whose Host is one of `domains`; routes in order, first match wins."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[HttpRoute, ...]


@dataclass(frozen=True)
class RouteTable:
    name: str  # the direction; an edge listener's: edge-<gateway listener>
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True)
class GlobalRateLimit:
    cluster: Cluster  # the rate-limit service (gRPC)
    domain: str
    descriptors: tuple[str, ...]
    failure_mode_deny: bool
    timeout: Duration


@dataclass(frozen=True)
class AccessRule:
    """Requests from any of `principals` (SPIFFE IDs; empty: anyone) matching all conditions."""

    principals: tuple[str, ...]
    paths: tuple[PathCondition, ...]
    methods: tuple[str, ...]
    headers: tuple[HeaderCondition, ...]
    source: Source
    claims: tuple[tuple[str, str], ...] = ()  # verified JWT claims that must hold
    namespaces: tuple[str, ...] = ()  # SPIFFE ID prefixes `spiffe://<td>/ns/<ns>/sa/` (any of them)
    ip_blocks: tuple[str, ...] = ()  # CIDRs the connection's peer address is in (any of them)
    not_principals: tuple[str, ...] = ()  # met when the caller is none of these SPIFFE IDs
    not_namespaces: tuple[str, ...] = ()  # ... from none of these SPIFFE ID prefixes
    not_ip_blocks: tuple[str, ...] = ()  # ... the peer address in none of these CIDRs
    not_paths: tuple[PathCondition, ...] = ()  # ... the path none of these
    not_methods: tuple[str, ...] = ()  # ... the method none of these


@dataclass(frozen=True)
class Access:
    """Authorization of an inbound listener. `allow` None: no allow-list (everything not denied passes)."""

    deny: tuple[AccessRule, ...]
    allow: tuple[AccessRule, ...] | None
    dry_run: bool


@dataclass(frozen=True)
class JwtIssuer:
    name: str
    issuer: str
    audiences: tuple[str, ...]
    jwks: str | None  # inline document
    jwks_file: str | None
    from_headers: tuple[tuple[str, str], ...]  # (header, prefix)
    from_params: tuple[str, ...]
    forward_claims: tuple[tuple[str, str], ...]  # (claim, header)
    forward_token: bool


@dataclass(frozen=True)
class JwtRequirement:
    paths: tuple[PathCondition, ...]  # `path_prefix` conditions; empty: every path
    providers: tuple[str, ...]  # empty: any provider
    allow_missing: bool


@dataclass(frozen=True)
class JwtCheck:
    providers: tuple[JwtIssuer, ...]
    rules: tuple[JwtRequirement, ...]


@dataclass(frozen=True)
class PathNormalization:
    """What a listener does to request paths before routes and filters see them.

    Dot segments are always resolved and repeated slashes merged; `escaped_slashes` decides what happens
    to `%2F`/`%5C` in a path: refuse the request (400), decode and redirect to the decoded path, decode
    and forward, or keep them as they are.
    """

    escaped_slashes: Literal["reject", "redirect", "decode", "keep"] = "reject"


@dataclass(frozen=True)
class HttpListener:
    direction: Direction
    address: str
    port: int
    routes: RouteTable
    rate_limit: TokenBucket | None = None  # one bucket for everything arriving here
    global_rate_limit: GlobalRateLimit | None = None
    tls_mode: Literal["strict", "permissive"] | None = None  # inbound: terminate mTLS
    access: Access | None = None  # inbound: who may call what
    jwt: JwtCheck | None = None  # inbound: verify request tokens
    paths: PathNormalization = PathNormalization()
    edge: Edge | None = None  # direction `edge`: a gateway listener for outside clients (compiler/ir_edge.py)
    caller_version: bool = False  # outbound: keep the app's version (CALLER_VERSION_ENV) with each connection


@dataclass(frozen=True)
class TcpListener:
    """Opaque TCP: everything arriving here goes to one cluster.

    `access` decides per connection, on the caller's identity only (bytes carry no paths, methods,
    headers or tokens; the checks refuse rules that need them, and RequestAuthentication).
    """

    direction: Direction
    address: str
    port: int
    cluster: Cluster
    source: Source
    tls_mode: Literal["strict", "permissive"] | None = None  # inbound: terminate mTLS
    access: Access | None = None  # inbound: which callers may connect
    split: tuple[Target, ...] = ()  # a tcp Route's weights per connection (instead of `cluster`); see lower/tcp.py


Listener = Union[HttpListener, TcpListener]


@dataclass(frozen=True)
class Metrics:
    """The Prometheus listener: `/stats/prometheus` of the admin interface, and nothing else of it."""

    address: str
    port: int
    keep_prefixes: tuple[str, ...]


@dataclass(frozen=True)
class Tracing:
    provider: Literal["zipkin", "opentelemetry"]
    collector: Cluster
    sampling: int
    tags: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AccessLog:
    to: Literal["stdout", "file"]
    path: str | None
    format: Literal["json", "text"]
    only: Literal["all", "errors", "slow"]
    slow_over: Duration


@dataclass(frozen=True)
class Sidecar:
    service: str
    mesh: str
    protocol: Protocol
    admin_address: str
    admin_port: int
    config_dir: str  # where the sidecar reads its own output folder
    listeners: tuple[Listener, ...]  # sorted by (direction, port)
    clusters: tuple[Cluster, ...]  # sorted by id
    source: Source
    tls: SidecarTls | None = None
    metrics: Metrics | None = None
    tracing: Tracing | None = None
    access_log: AccessLog | None = None
    source_address: str | None = None  # one host: outbound connections leave from the sidecar's own address
    kubernetes: KubernetesSidecar | None = None  # the service runs in pods (its sidecar address is a wildcard)
    gateway: GatewaySpec | None = None  # a Gateway's Envoy (`service` is its name, no app; compiler/ir_edge.py)


@dataclass(frozen=True)
class MeshIR:
    name: str
    sidecars: tuple[Sidecar, ...]  # sorted by service (gateways among them, by their names)


def to_json(ir: MeshIR) -> str:
    """A stable, readable JSON dump of the IR (shared nodes are written out in full)."""

    def plain(value):
        if isinstance(value, Target):  # a target names its cluster; the sidecar lists it in full
            return {"cluster": value.cluster.id, "weight": value.weight, "set_headers": plain(value.set_headers)}
        if dataclasses.is_dataclass(value):
            if isinstance(value, Source):
                return value.short
            if isinstance(value, (Duration, Endpoint)):
                return str(value)
            out = {
                f.name: plain(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.default is dataclasses.MISSING or getattr(value, f.name) != f.default  # defaults left out
            }
            if isinstance(value, Cluster):
                out = {"id": value.id, **out}
            return out
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    from compiler.serialize import Serializer

    return Serializer().dumps(plain(ir)) + "\n"
