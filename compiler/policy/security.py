"""Zero-trust settings: mutual TLS between sidecars and service identities.

Every sidecar proves who it is with a certificate whose URI SAN is its
service's SPIFFE ID, `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
Certificates and keys are never part of the compiled output: sidecars read
them from files (`certs_dir`) through SDS, so rotating them on disk takes
effect without a restart.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from compiler.policy.base import Document, PolicyModel
from compiler.policy.jwks import check_jwks
from compiler.policy.route import HeaderMatch, HeaderName, Method, PathMatch
from compiler.policy.types import Name, NonEmpty, OneLine

MtlsMode = Literal["strict", "permissive", "disable"]


class Mtls(PolicyModel):
    """Mesh-wide mutual TLS (a Service may override `mode`).

    - `strict`: the inbound side accepts only mTLS from mesh identities;
    - `permissive`: mTLS and plaintext on the same port (migration);
    - `disable`: plaintext.
    Callers originate mTLS to every destination whose mode is not `disable`.
    """

    mode: MtlsMode = "disable"
    """`strict`, `permissive` or `disable` (see above); a Service may override it with its own `mtls`."""
    certs_dir: str = Field(default="/etc/meshc/certs", pattern=r"^/[A-Za-z0-9._/-]*$")
    """Where each sidecar finds cert.pem (its chain), key.pem and ca.pem (the mesh's trust bundle)."""


def _cidr(value: Any) -> str:
    """`10.1.0.0/16`, `fd00::/8`, or one address (`10.1.2.3` is `10.1.2.3/32`); normalised; no host bits."""
    if isinstance(value, str) and "%" in value:  # Python reads `fe80::1%eth0` as a scoped address; Envoy cannot
        raise PydanticCustomError(
            "cidr_zone", "'{value}' names a zone ('%' and an interface): Envoy matches the peer's address only; "
            "leave the zone out", {"value": value},
        )
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise PydanticCustomError("cidr_format", "'{value}' is not an IP address or CIDR block", {"value": value}) from None
    if str(net.network_address) != str(ipaddress.ip_interface(value).ip):
        raise PydanticCustomError(
            "cidr_host_bits", "'{value}' has bits set after its prefix: write {net}", {"value": value, "net": str(net)}
        )
    return str(net)


Cidr = Annotated[str, Field(strict=True, min_length=1), AfterValidator(_cidr)]
"""An IPv4 or IPv6 CIDR block (`10.1.0.0/16`) or one address (`/32`, `/128`)."""


class AuthzRule(PolicyModel):
    """Requests that match all given conditions; an empty condition matches anything.

    Each list is one condition, met by any of its items; a `not_` list is met when the request matches
    none of its items (Istio's `notPrincipals`, `notNamespaces`, `notIpBlocks`, `notPaths`, `notMethods`).
    """

    from_: list[Name] = Field(default=[], alias="from")
    """Calling services, by their certificate's SPIFFE ID (needs mTLS on this service)."""
    namespaces: list[Name] = []
    """Callers whose certificate says one of these namespaces (any service account in it:
    `spiffe://<trust_domain>/ns/<namespace>/sa/...`); needs mTLS on this service, like `from`."""
    ip_blocks: list[Cidr] = []
    """The connection's peer address is in one of these CIDR blocks (Envoy `direct_remote_ip`, Istio
    `ipBlocks`): the calling sidecar's address (in one host, each sidecar's own loopback address; in pods,
    the pod's IP). A request through a Gateway comes from the gateway's address, never the client's:
    `X-Forwarded-For` and a Gateway's `trusted_hops` are not read here, so a header cannot forge it."""
    not_from: list[Name] = []
    """Met when the caller is none of these services (a plaintext caller, with no identity, is none of them:
    needs mTLS like `from`)."""
    not_namespaces: list[Name] = []
    """Met when the caller's certificate is from none of these namespaces (needs mTLS like `from`)."""
    not_ip_blocks: list[Cidr] = []
    """Met when the peer address is in none of these CIDR blocks (see `ip_blocks`)."""
    paths: list[PathMatch] = []
    """Any of these paths (after normalisation, see Mesh `paths`). A `prefix` is a path prefix, not a string
    prefix: `/admin` is `/admin` and everything under `/admin/`, never `/administrator`; a prefix ending in
    `/` (`/admin/`) is everything under it. `exact` is one path; `regex` must match the whole path."""
    methods: list[Method] = []
    """Any of these methods (empty: any method)."""
    headers: list[HeaderMatch] = []
    """Request headers that must all match."""
    not_paths: list[PathMatch] = []
    """Met when the path is none of these (each matched as in `paths`)."""
    not_methods: list[Method] = []
    """Met when the method is none of these."""
    claims: dict[NonEmpty, str] = {}
    """Verified JWT claims (string values) that must hold; needs a RequestAuthentication on the service."""

    model_config = {"populate_by_name": True}


class AuthorizationPolicy(Document):
    """Who may call this service (Envoy `envoy.filters.http.rbac` on its inbound side).

    Deny rules win over allow rules; once a service has allow rules, everything
    they do not allow is refused (403). `mode: dry_run` only logs and counts
    what would be refused (`shadow_rules`), for rolling a policy out safely.
    A tcp service is authorized per connection by `envoy.filters.network.rbac`,
    on who calls only (`from`, `namespaces`, `ip_blocks` and their `not_` forms; a refused connection is
    closed).
    """

    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    service: Name
    """The service whose inbound side enforces these rules."""
    mode: Literal["enforce", "dry_run"] = "enforce"
    """`enforce`: refused requests get 403; `dry_run`: they are only logged and counted (`shadow_rules`)."""
    allow: list[AuthzRule] = []
    """Requests any of these rules matches are allowed; once there is one, everything else is refused (403)."""
    deny: list[AuthzRule] = []
    """Requests any of these rules matches are refused (403), whatever `allow` says."""

    @property
    def name(self) -> str:
        return self.service


class Authorization(PolicyModel):
    """Mesh-wide authorization default: `allow` (no policy, no limits) or `deny` (only what a policy allows)."""

    default: Literal["allow", "deny"] = "allow"
    """`allow`: a service without allow rules takes every request; `deny`: only what a policy allows."""


class TokenHeader(PolicyModel):
    """A request header that may carry the token."""

    name: HeaderName = "authorization"
    """The header's name."""
    prefix: OneLine = "Bearer "
    """What precedes the token in the header (Envoy `value_prefix`; no NUL, CR or LF)."""


class JwtProvider(PolicyModel):
    """Who issues tokens and how to check them (Envoy `jwt_authn` provider). Give `jwks` or `jwks_file`."""

    name: Name
    """The provider's name, which `rules[].providers` refer to."""
    issuer: str = Field(min_length=1)
    """A token's `iss` must be exactly this."""
    audiences: list[str] = []
    """The token's `aud` must contain one of these (empty: not checked); a genuine token for another
    audience is refused with 403 (Envoy), an invalid token with 401."""
    jwks: str | None = None
    """The public keys as an inline JWKS document (JSON)."""
    jwks_file: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._/-]*$")
    """Or a JWKS file on the sidecar's machine."""
    from_headers: list[TokenHeader] = [TokenHeader()]
    """Headers that may carry the token, with what precedes it (default: `Authorization: Bearer <token>`)."""
    from_params: list[str] = []
    """Query parameters that may carry the token."""
    forward_claims: dict[NonEmpty, HeaderName] = {}
    """Claim -> request header the app receives it in."""
    forward_token: bool = False
    """Pass the token on to the app (default: removed once verified)."""

    @field_validator("jwks")
    @classmethod
    def _key_set(cls, jwks: str | None) -> str | None:
        """Parsed as Envoy does: a non-empty key set, each key with its `kty` and the members its kind needs."""
        return None if jwks is None else check_jwks(jwks)

    @model_validator(mode="after")
    def _keys(self) -> "JwtProvider":
        if (self.jwks is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks (inline) or jwks_file")
        return self


class JwtRule(PolicyModel):
    """Requests on these paths (default: all) need a valid token from one of `providers` (default: any)."""

    paths: list[Annotated[str, Field(pattern=r"^/")]] = []
    """Path prefixes (after normalisation, see Mesh `paths`): `/public` is `/public` and everything under
    `/public/`, never `/publicity` (Envoy RouteMatch `path_separated_prefix`); `/` and prefixes ending in `/`
    are plain prefixes (`/public/` is everything under it, not `/public` itself)."""
    providers: list[Name] = []
    """Providers whose tokens are accepted here (empty: any of this RequestAuthentication's)."""
    allow_missing: bool = False
    """A request without a token passes (an invalid token is still refused with 401)."""


class RequestAuthentication(Document):
    """Verify JWTs on the service's inbound side (Envoy `envoy.filters.http.jwt_authn`): 401 when invalid.

    Without `rules`, every request needs a valid token from any provider.
    Verified claims can be used in AuthorizationPolicy rules (`claims`).
    """

    kind: Literal["RequestAuthentication"] = "RequestAuthentication"
    service: Name
    """The service (or Gateway) whose inbound side verifies the tokens."""
    providers: list[JwtProvider] = Field(min_length=1)
    """Who issues tokens and how to check them; at least one."""
    rules: list[JwtRule] = []
    """Which paths need a token from which providers."""

    @property
    def name(self) -> str:
        return self.service
