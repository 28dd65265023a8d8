"""The Route kind: how callers reach a service (applied on every caller's sidecar).

A Route is a list of rules; the first rule whose `match` holds decides. A rule
either forwards (`to`, with optional mirrors, timeouts, retries, faults,
rewrites and header changes), redirects (`redirect`) or answers itself
(`respond`). Like Istio's VirtualService, but only what Envoy can do on the
caller's side.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from compiler.policy.base import Document, PolicyModel
from compiler.policy.match import (  # noqa: F401 (re-exported: the Route kind's match and shared types)
    Regex,
    HeaderName,
    MAX_HEADER_BYTES,
    ChangeableHeaderName,
    HeaderValue,
    Method,
    NON_IDEMPOTENT_METHODS,
    _OneOf,
    PathMatch,
    HeaderMatch,
    QueryMatch,
    CookieMatch,
    Match,
)
from compiler.policy.regex import check_regex
from compiler.policy.traffic import RateLimit
from compiler.policy.types import Duration, Name, OneLine, Percentage, PositiveDuration, PositiveUInt32


# --------------------------------------------------------------------------
# forwarding controls
# --------------------------------------------------------------------------


class Mirror(PolicyModel):
    """Send a copy of `percent` of the matching requests to another version or service.

    Envoy: `request_mirror_policies`. The caller never sees the copy's answer or
    waits for it; the copy's Host gets a `-shadow` suffix.
    """

    to: Name
    """A version: of this Route's service, or of `service` when given."""
    service: Name | None = None
    """Another service (or ExternalService) to copy to; default: this Route's service."""
    percent: Percentage = 100
    """Share of the matching requests that are copied, 0-100, with up to 4 decimals (`0.5`; Envoy counts in
    millionths)."""


RetryOn = Literal[
    "5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream", "retriable-status-codes"
]


class RetryStatusCodes(PolicyModel):
    """`retriable-status-codes: [503, 429]` inside `on`."""

    retriable_status_codes: list[Annotated[int, Field(strict=True, ge=100, le=599)]] = Field(
        alias="retriable-status-codes", min_length=1
    )
    """HTTP status codes (100-599) that count as a failed try (Envoy `retriable_status_codes`)."""


class Backoff(PolicyModel):
    """Jittered exponential back-off between tries (Envoy `retry_back_off`)."""

    base: PositiveDuration = Duration(25)
    """The first wait between tries; each next one is up to twice as long, with jitter."""
    max: PositiveDuration | None = None
    """Default: 10 × base."""

    @model_validator(mode="after")
    def _max_not_below_base(self) -> "Backoff":
        if self.max is not None and self.max < self.base:
            raise ValueError(f"max {self.max} is shorter than base {self.base} (Envoy refuses it)")
        return self


class Retries(PolicyModel):
    """Retry failed tries (Envoy `retry_policy`), each try on a host not tried before."""

    attempts: Annotated[int, Field(strict=True, ge=1, le=10)]
    """Retries after the first try: the upstream sees at most 1 + attempts tries per request."""
    per_try_timeout: Duration | None = None
    """Timeout of each try (Envoy `per_try_timeout`); default: none, only the rule's `timeout` for all tries."""
    on: list[Union[RetryOn, RetryStatusCodes]] = ["5xx", "connect-failure", "refused-stream", "reset"]
    """What makes a try fail (Envoy `retry_on`): `5xx`, `gateway-error` (502, 503, 504), `reset`, `connect-failure`,
    `retriable-4xx` (409), `refused-stream`, and status codes as `retriable-status-codes: [503, 429]`."""
    backoff: Backoff = Backoff()
    non_idempotent: bool = False
    """Also retry POST/PATCH/CONNECT (not safe in general: the first try may have had an effect).
    Without it those methods are forwarded without retries."""

    @property
    def conditions(self) -> list[str]:
        out = [c for c in self.on if isinstance(c, str)]
        if self.status_codes and "retriable-status-codes" not in out:
            out.append("retriable-status-codes")
        return out

    @property
    def status_codes(self) -> list[int]:
        return [code for c in self.on if isinstance(c, RetryStatusCodes) for code in c.retriable_status_codes]


class RetryBudget(PolicyModel):
    """Cap on concurrent retries to the service (Envoy cluster `retry_budget`), so retries cannot multiply load in an outage."""

    percent: Annotated[int, Field(strict=True, ge=1, le=100)] = 20
    """Retries may be at most this share of the requests in flight."""
    min_concurrency: PositiveUInt32 = 3
    """Retries always allowed in flight, however little traffic there is."""


class Delay(PolicyModel):
    """Wait before forwarding: `fixed` long, for `percent` of the matching requests."""

    fixed: PositiveDuration
    """How long each delayed request waits before it is forwarded."""
    percent: Percentage = 100
    """Share of the matching requests that are delayed, 0-100, with up to 4 decimals (`0.1`)."""


class Abort(_OneOf):
    """Fail requests without calling the upstream: an HTTP `status`, or a `grpc_status` (applied to gRPC
    requests only: Envoy sends it as HTTP 200, which a plain HTTP caller would take for success)."""

    _choices = ("status", "grpc_status")
    status: Annotated[int, Field(strict=True, ge=200, le=599)] | None = None
    """The HTTP status to answer with, 200-599."""
    grpc_status: Annotated[int, Field(strict=True, ge=0, le=16)] | None = None
    """The gRPC status code to answer with, 0-16 (gRPC requests only)."""
    percent: Percentage = 100
    """Share of the matching requests that are failed, 0-100, with up to 4 decimals (`0.01`)."""


class Fault(PolicyModel):
    """Chaos from policy (Envoy `envoy.filters.http.fault`): delay and/or abort a share of requests."""

    delay: Delay | None = None
    abort: Abort | None = None
    headers: list[HeaderMatch] = []
    """Only requests with these headers (e.g. `x-chaos: on`) get the fault."""

    @model_validator(mode="after")
    def _something(self) -> "Fault":
        if self.delay is None and self.abort is None:
            raise ValueError("give a delay, an abort or both")
        return self


class RegexRewrite(PolicyModel):
    """Rewrite the path with a regular expression (Envoy `regex_rewrite`)."""

    pattern: Regex
    """An RE2 regular expression; each match in the path is replaced."""
    substitution: OneLine
    """What replaces each match; `\\1`, `\\2`... insert the pattern's groups (no NUL, CR or LF)."""


class Rewrite(PolicyModel):
    """Change the request before forwarding: the path (`prefix` replaces the matched prefix, or `regex`) and/or the Host."""

    prefix: Annotated[OneLine, Field(pattern=r"^/")] | None = None
    """Replaces the prefix the rule's `match.path.prefix` matched (Envoy `prefix_rewrite`)."""
    regex: RegexRewrite | None = None
    host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    """The Host header the upstream receives (Envoy `host_rewrite_literal`)."""

    @model_validator(mode="after")
    def _one_path_rewrite(self) -> "Rewrite":
        if self.prefix is not None and self.regex is not None:
            raise ValueError("give prefix or regex, not both")
        if self.prefix is None and self.regex is None and self.host is None:
            raise ValueError("give prefix, regex or host")
        return self


class HeaderChanges(PolicyModel):
    """`add` appends a value, `set` replaces any value, `remove` drops the header."""

    add: dict[ChangeableHeaderName, HeaderValue] = {}
    """Header -> value added; a value the header already has is kept (Envoy `APPEND_IF_EXISTS_OR_ADD`)."""
    set: dict[ChangeableHeaderName, HeaderValue] = {}
    """Header -> value that replaces any value the header had (Envoy `OVERWRITE_IF_EXISTS_OR_ADD`)."""
    remove: list[ChangeableHeaderName] = []
    """Headers removed."""


class Cors(PolicyModel):
    """Answer CORS preflights and add CORS headers (Envoy `envoy.filters.http.cors`)."""

    allow_origins: list[str] = Field(min_length=1)
    """Exact origins (`https://shop.example`), `*`, or `regex:<pattern>`."""
    allow_methods: list[Method] = []
    """Methods a cross-origin request may use (`Access-Control-Allow-Methods`)."""
    allow_headers: list[HeaderName] = []
    """Request headers a cross-origin request may send (`Access-Control-Allow-Headers`)."""
    expose_headers: list[HeaderName] = []
    """Response headers the browser lets the page read (`Access-Control-Expose-Headers`)."""
    max_age: Duration | None = None
    """How long a browser may keep a preflight's answer (`Access-Control-Max-Age`, whole seconds)."""
    allow_credentials: bool = False
    """Allow cookies and credentials on cross-origin requests (`Access-Control-Allow-Credentials`)."""

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin.startswith("regex:"):
                check_regex(origin[len("regex:"):])
        return origins


class Redirect(PolicyModel):
    """Answer with a redirect instead of forwarding."""

    scheme: Literal["http", "https"] | None = None
    """The new URL's scheme; default: the request's."""
    host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]+$")
    """The new URL's host; default: the request's."""
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] | None = None
    """The new URL's port; default: the request's."""
    path: Annotated[OneLine, Field(pattern=r"^/")] | None = None
    """Replaces the whole path."""
    prefix: Annotated[OneLine, Field(pattern=r"^/")] | None = None
    """Replaces the matched prefix (the rule must match a path prefix)."""
    code: Literal[301, 302, 303, 307, 308] = 301
    """The redirect's status code."""

    @model_validator(mode="after")
    def _something(self) -> "Redirect":
        if self.path is not None and self.prefix is not None:
            raise ValueError("give path or prefix, not both")
        if all(getattr(self, k) is None for k in ("scheme", "host", "port", "path", "prefix")):
            raise ValueError("a redirect changes at least one of scheme, host, port, path, prefix")
        return self


MAX_DIRECT_RESPONSE_BYTES = 4096
"""Envoy's default `max_direct_response_body_size_bytes` of a route configuration."""


class Respond(PolicyModel):
    """Answer directly (Envoy `direct_response`), e.g. a maintenance page or a stub."""

    status: Annotated[int, Field(strict=True, ge=200, le=599)]
    """The status to answer with, 200-599."""
    body: str = ""
    """At most 4096 bytes (UTF-8): Envoy's default `max_direct_response_body_size_bytes`."""

    @field_validator("body")
    @classmethod
    def _fits(cls, body: str) -> str:
        size = len(body.encode("utf-8", "surrogatepass"))
        if size > MAX_DIRECT_RESPONSE_BYTES:
            raise ValueError(f"a body of {size} bytes; Envoy answers directly with at most {MAX_DIRECT_RESPONSE_BYTES}")
        return body


# --------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------


class RouteRule(PolicyModel):
    """When `match` holds: forward (`to`), `redirect` or `respond`; exactly one of them."""

    match: Match = Match()
    to: dict[Name, Percentage] | None = None
    """Version -> weight in percent, adding up to 100 (Envoy `weighted_clusters`); up to 4 decimals
    (`{v1: 99.9, v2: 0.1}`: Envoy then gets the weights in millionths). On a tcp service: per connection."""
    mirror: list[Mirror] = []
    """Copies of the matching requests sent elsewhere; the answer always comes from `to`."""
    timeout: Duration | None = None
    """Whole request, all tries included (default: the Mesh's `defaults.timeout`); 504 when it expires."""
    idle_timeout: Duration | None = None
    """Reset the stream when nothing is sent or received for this long."""
    retries: Retries | None = None
    fault: Fault | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderChanges | None = None
    """Change the request's headers before forwarding."""
    response_headers: HeaderChanges | None = None
    """Change the response's headers before the caller gets them."""
    cors: Cors | None = None
    rate_limit: "RateLimit | None" = None
    """A token bucket for this rule on each caller's sidecar (Envoy `local_ratelimit` per route); 429 when empty."""
    redirect: Redirect | None = None
    respond: Respond | None = None

    @model_validator(mode="after")
    def _one_action(self) -> "RouteRule":
        actions = [k for k in ("to", "redirect", "respond") if getattr(self, k) is not None]
        if len(actions) != 1:
            raise ValueError("give exactly one of to, redirect, respond")
        if self.to is None:
            forwarding = [k for k in ("mirror", "retries", "rewrite", "timeout", "idle_timeout") if getattr(self, k)]
            if forwarding:
                raise ValueError(f"{', '.join(forwarding)} only apply to rules that forward (to)")
        if self.to is not None and not self.to:
            raise ValueError("to: name at least one version")
        return self


class Route(Document):
    """How callers reach a service; applied on every caller's sidecar. Rules run in order, first match wins."""

    kind: Literal["Route"] = "Route"
    service: Name
    """The service (or ExternalService) these rules lead to; every caller's sidecar applies them."""
    rules: list[RouteRule] = Field(min_length=1)
    """Tried in order; the first rule whose `match` holds decides. At least one."""
    retry_budget: RetryBudget = RetryBudget()
    """Applies to the service's clusters on every caller when any rule retries."""

    @property
    def name(self) -> str:  # routes are named after their service
        return self.service
