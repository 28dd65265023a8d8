"""The TrafficPolicy kind: how a service protects itself and is protected by its callers.

Like Istio's DestinationRule, it lives with the destination service. Its
connection limits, outlier detection, load balancing and health checks apply
to the service's clusters on every caller's sidecar *and* on the service's own
inbound side (where its instances are); rate limits apply on its inbound side.
Mesh `defaults` give every cluster a connection pool and an outlier detector
even when no TrafficPolicy says anything.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from compiler.policy.base import Document, PolicyModel
from compiler.policy.types import Duration, Name, Percent, PositiveDuration, PositiveUInt32, UInt32, duration_at_least

PositiveInt = PositiveUInt32  # Envoy keeps these counts in uint32 fields
NonNegativeInt = UInt32


def _whole_seconds(value: Duration) -> Duration:
    if value.ms % 1000 or value.ms <= 0:
        raise ValueError("must be a whole number of seconds, at least 1s (Envoy counts keepalive in seconds)")
    if value.ms // 1000 > 2**32 - 1:
        raise ValueError("must be at most 4294967295s (Envoy keeps keepalive seconds in uint32)")
    return value


WholeSeconds = Annotated[Duration, AfterValidator(_whole_seconds)]


class TcpKeepalive(PolicyModel):
    """Keepalive probes on an idle TCP connection (Envoy `core.v3.TcpKeepalive`; Istio
    `connectionPool.tcp.tcpKeepalive`). Envoy counts in whole seconds; what is not given is the operating
    system's value (Linux: 9 probes, 2h, 75s)."""

    probes: PositiveInt | None = None
    """Unanswered probes before the connection is dropped (Istio `probes`; Envoy `keepalive_probes`)."""
    time: WholeSeconds | None = None
    """Idle time before the first probe (Istio `time`; Envoy `keepalive_time`)."""
    interval: WholeSeconds | None = None
    """Time between probes (Istio `interval`; Envoy `keepalive_interval`)."""


class ConnectionPool(PolicyModel):
    """Bounds on what one sidecar sends to the service (Envoy `circuit_breakers.thresholds`).

    Past a bound, Envoy fails fast with 503 (`x-envoy-overloaded`) instead of queueing:
    a slow service then slows its callers down by at most this much.
    """

    max_connections: PositiveInt = 1024
    """Connections to the service at once, over all its instances."""
    max_pending_requests: PositiveInt = 1024
    """Requests waiting for a connection (HTTP/1.1)."""
    max_requests: PositiveInt = 1024
    """Requests in flight (HTTP/2 streams)."""
    max_retries: PositiveInt = 3
    """Retries in flight at once, over all requests."""
    max_requests_per_connection: PositiveInt | None = None
    """Close an upstream connection after it carried this many requests, so the next request opens a new one
    (Envoy `common_http_protocol_options.max_requests_per_connection`; Istio
    `connectionPool.http.maxRequestsPerConnection`). Spreads long-lived callers over new instances. Default:
    unlimited. HTTP and gRPC only (E234 on a tcp service)."""
    idle_timeout: PositiveDuration | None = None
    """Close an upstream connection that carried no request for this long (Envoy
    `common_http_protocol_options.idle_timeout`, counted in `upstream_cx_idle_timeout`; Istio
    `connectionPool.http.idleTimeout`). Default: Envoy's one hour. HTTP and gRPC only (E234 on a tcp
    service)."""
    tcp_keepalive: TcpKeepalive | None = None
    """TCP keepalive probes on every upstream connection (Envoy `upstream_connection_options.tcp_keepalive`; Istio
    `connectionPool.tcp.tcpKeepalive`): finds peers gone without a FIN (a NAT or firewall that forgot the
    connection). Default: the operating system's settings (usually none)."""
    upstream_protocol: Literal["http1", "http2", "client"] | None = None
    """The HTTP version to the service: `http1`, `http2` (cleartext h2c to the app and between sidecars;
    Istio `connectionPool.http.h2UpgradePolicy: UPGRADE`), or `client`: the one the request came in with
    (Envoy `use_downstream_protocol_config`; Istio `connectionPool.http.useClientProtocol: true`). Default:
    the service's protocol (http: HTTP/1.1, grpc: HTTP/2). Not on a tcp service (E234); a grpc service needs
    HTTP/2 (E238 for `http1`)."""


class SuccessRate(PolicyModel):
    """Eject hosts whose success rate is `stdev_factor`/1000 standard deviations below the mean."""

    min_hosts: PositiveInt = 5
    """Hosts with enough requests needed before this check runs (Envoy `success_rate_minimum_hosts`)."""
    request_volume: PositiveInt = 100
    """Requests a host needs in an interval to be judged (Envoy `success_rate_request_volume`)."""
    stdev_factor: PositiveInt = 1900
    """A host is ejected below mean - stdev × stdev_factor / 1000 (Envoy `success_rate_stdev_factor`; 1900 is 1.9)."""


class OutlierDetection(PolicyModel):
    """Stop sending to a failing instance for a while (Envoy `outlier_detection`).

    Closed → open: after `consecutive_5xx` (or gateway errors) the host is ejected;
    half-open: after `base_ejection_time` × times ejected it gets traffic again, and a
    new failure ejects it for longer.
    """

    consecutive_5xx: NonNegativeInt = 5
    """0 turns this trigger off."""
    consecutive_gateway_errors: NonNegativeInt = 0
    """502, 503, 504 and connection failures only; 0 turns this trigger off."""
    success_rate: SuccessRate | None = None
    """Also eject hosts whose success rate is far below the others' (default: off)."""
    interval: PositiveDuration = Duration(10_000)
    """How often ejections are decided and expire."""
    base_ejection_time: PositiveDuration = Duration(30_000)
    """How long a host stays ejected the first time; each ejection after that lasts this × the times ejected."""
    max_ejection_percent: Percent = 10
    """At most this share of a version's instances is ejected at once; one failing instance can always be
    ejected, however few there are (Envoy `always_eject_one_host`): with 10% and fewer than ten pods,
    Envoy would otherwise eject nobody."""


class HashOn(PolicyModel):
    """What a hashing load balancer keys on (sticky sessions): exactly one."""

    header: str | None = Field(default=None, pattern=r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
    """Hash on this request header's value."""
    cookie: str | None = Field(default=None, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    """Hash on this cookie's value."""
    cookie_ttl: Duration | None = None
    """With a cookie: Envoy sets it (for this long) when the request has none."""
    source_ip: Literal[True] | None = None
    """`true`: the calling sidecar's address (`false` would say nothing, so it is not a value)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "HashOn":
        given = [k for k in ("header", "cookie", "source_ip") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of header, cookie, source_ip: true")
        if self.cookie_ttl is not None and self.cookie is None:
            raise ValueError("cookie_ttl only applies when hashing on a cookie")
        return self


class LoadBalancer(PolicyModel):
    """How callers spread requests over the service's instances."""

    policy: Literal["round_robin", "least_request", "random", "ring_hash", "maglev"] = "round_robin"
    """How a caller's sidecar picks an instance (Envoy `lb_policy`): `round_robin`, `least_request` (the one of two
    random picks with fewer requests in flight), `random`, or `ring_hash` / `maglev` (consistent hashing on
    `hash_on`: sticky sessions)."""
    hash_on: HashOn | None = None
    """Only with ring_hash or maglev."""


def _request_path(path: str) -> str:
    bad = next((c for c in path if (ord(c) < 0x20 and c != "\t") or c == "\x7f"), None)
    if bad is not None:
        raise ValueError(f"a health-check path cannot hold {bad!r} (Envoy refuses control characters)")
    return path


class HealthCheck(PolicyModel):
    """Active HTTP health checks of each instance (Envoy `health_checks`)."""

    path: Annotated[str, Field(pattern=r"^/"), AfterValidator(_request_path)]
    """Sent as the request's path: no control characters but tab (Envoy refuses them)."""
    interval: PositiveDuration = Duration(5_000)
    """Time between two checks of an instance."""
    timeout: PositiveDuration = Duration(1_000)
    """A check not answered within this time fails."""
    healthy_threshold: PositiveInt = 2
    """Passed checks in a row before an unhealthy instance gets traffic again."""
    unhealthy_threshold: PositiveInt = 3
    """Failed checks in a row before an instance stops getting traffic."""


class RateLimit(PolicyModel):
    """A token bucket: `requests` per `per`, refilled in full every `per`; 429 when empty."""

    requests: PositiveInt
    """Requests allowed per `per` (the bucket's tokens)."""
    per: duration_at_least(50, "Envoy's local rate limit refills at most every 50ms") = Duration(1_000)
    """How often the bucket is refilled in full; at least 50ms."""


class GlobalRateLimit(PolicyModel):
    """Ask a rate-limit service (Envoy `envoy.filters.http.ratelimit`) about each request."""

    service: Name
    """The rate-limit service, a Service of this mesh speaking gRPC."""
    domain: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    """The rate-limit service's domain for these descriptors (its configuration's `domain`)."""
    descriptors: list[Literal["remote_address", "path", "method", "destination"]] = ["destination"]
    """What each request tells the rate-limit service: the caller's address (`remote_address`), `path`, `method`,
    and this service's name (`destination`)."""
    failure_mode_deny: bool = False
    """When the rate-limit service is down: allow (default) or deny."""
    timeout: Duration = Duration(20)
    """How long to wait for the rate-limit service's answer."""


class VersionLoadBalancer(PolicyModel):
    """How callers pick an instance of one version. Its key for hashing is the TrafficPolicy's
    `load_balancer.hash_on`: Envoy hashes on the route, before a version is chosen."""

    REFUSED: ClassVar[dict[str, str]] = {
        "hash_on": "the hash key is computed on the caller's route before a version is chosen, so it is one for "
        "the whole service; set load_balancer.hash_on on the TrafficPolicy itself (it keys every version whose "
        "policy hashes)",
    }

    policy: Literal["round_robin", "least_request", "random", "ring_hash", "maglev"] = "round_robin"
    """How a caller's sidecar picks an instance of this version (Envoy `lb_policy` of the version's clusters);
    `ring_hash` / `maglev` hash on the TrafficPolicy's `load_balancer.hash_on` (W233 without one)."""


class VersionTraffic(PolicyModel):
    """One version's own traffic settings (Istio: a DestinationRule subset's `trafficPolicy`).

    Merge rule (Istio's): each field given here replaces the TrafficPolicy's field of that name *as a
    whole* for this version's clusters, on every caller's sidecar and on the service's inbound side; a field
    not given is the TrafficPolicy's (else the Mesh's default). `connection_pool: {max_connections: 1}` thus
    gives this version 1024 pending requests (the model's default), not the service's value. Rate limits
    belong to the service's inbound listener and cannot be per version.
    """

    REFUSED: ClassVar[dict[str, str]] = {
        "rate_limit": "the service's inbound listener keeps one token bucket for all its versions; set rate_limit "
        "on the TrafficPolicy itself",
        "global_rate_limit": "the service's inbound listener asks the rate-limit service before a version is "
        "chosen; set global_rate_limit on the TrafficPolicy itself",
    }

    connection_pool: ConnectionPool | None = None
    """Limits of what each sidecar sends to this version (replaces the TrafficPolicy's `connection_pool`)."""
    outlier_detection: OutlierDetection | None = None
    """Ejection of this version's failing instances (replaces the TrafficPolicy's `outlier_detection`)."""
    load_balancer: VersionLoadBalancer | None = None
    """How callers pick an instance of this version (replaces the TrafficPolicy's `load_balancer.policy`)."""
    health_check: HealthCheck | None = None
    """Active health checks of this version's instances (replaces the TrafficPolicy's `health_check`)."""


class TrafficPolicy(Document):
    """Protection for one service, applied wherever its clusters are."""

    kind: Literal["TrafficPolicy"] = "TrafficPolicy"
    service: Name
    """The service (or ExternalService) protected."""
    connection_pool: ConnectionPool | None = None
    """Limits of what each sidecar sends to the service (default: the Mesh's `defaults.connection_pool`)."""
    outlier_detection: OutlierDetection | None = None
    """Ejection of failing instances (default: the Mesh's `defaults.outlier_detection`)."""
    load_balancer: LoadBalancer = LoadBalancer()
    """How callers pick an instance."""
    health_check: HealthCheck | None = None
    """Active health checks of each instance (default: none)."""
    versions: dict[Name, VersionTraffic] = {}
    """Settings for one version only, by version name (`default` for a service without versions and for an
    ExternalService): each field given replaces the field of the same name above, as a whole, for that
    version (Istio: a DestinationRule subset's `trafficPolicy`)."""
    rate_limit: RateLimit | None = None
    """Local rate limit of the service's inbound side (each sidecar has its own bucket)."""
    global_rate_limit: GlobalRateLimit | None = None
    """Ask a rate-limit service about each request on the service's inbound side."""
    websockets: bool = False
    """Let WebSocket upgrades (`Upgrade: websocket`) through to this service: on every caller's routes to it,
    a Gateway's routes to it and its own inbound routes (Envoy route `upgrade_configs`). Off, Envoy answers
    an upgrade request 403 on the caller's side (Istio lets them through everywhere; Istio's former HTTPRoute
    `websocketUpgrade`). The app must answer HTTP/1.1: not with `upstream_protocol: http2` or on a grpc
    service (E239), nor on a tcp service, whose bytes pass anyway (E234)."""

    @property
    def name(self) -> str:
        return self.service
