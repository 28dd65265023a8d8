"""Zero-trust settings: mutual TLS between sidecars and service identities.

Every sidecar proves who it is with a certificate whose URI SAN is its
service's SPIFFE ID, `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
Certificates and keys are never part of the compiled output: sidecars read
them from files (`certs_dir`) through SDS, so rotating them on disk takes
effect without a restart.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compiler.policy.base import Document, PolicyModel
from compiler.policy.route import HeaderMatch, Method, PathMatch
from compiler.policy.types import Name

MtlsMode = Literal["strict", "permissive", "disable"]


class Mtls(PolicyModel):
    """Mesh-wide mutual TLS (a Service may override `mode`).

    - `strict`: the inbound side accepts only mTLS from mesh identities;
    - `permissive`: mTLS and plaintext on the same port (migration);
    - `disable`: plaintext.
    Callers originate mTLS to every destination whose mode is not `disable`.
    """

    mode: MtlsMode = "disable"
    certs_dir: str = Field(default="/etc/meshc/certs", pattern=r"^/[A-Za-z0-9._/-]*$")
    """Where each sidecar finds cert.pem (its chain), key.pem and ca.pem (the mesh's trust bundle)."""


class AuthzRule(PolicyModel):
    """Requests that match all given conditions; an empty condition matches anything."""

    from_: list[Name] = Field(default=[], alias="from")
    """Calling services, by their certificate's SPIFFE ID (needs mTLS on this service)."""
    paths: list[PathMatch] = []
    methods: list[Method] = []
    headers: list[HeaderMatch] = []

    model_config = {"populate_by_name": True}


class AuthorizationPolicy(Document):
    """Who may call this service (Envoy `envoy.filters.http.rbac` on its inbound side).

    Deny rules win over allow rules; once a service has allow rules, everything
    they do not allow is refused (403). `mode: dry_run` only logs and counts
    what would be refused (`shadow_rules`), for rolling a policy out safely.
    """

    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    service: Name
    mode: Literal["enforce", "dry_run"] = "enforce"
    allow: list[AuthzRule] = []
    deny: list[AuthzRule] = []

    @property
    def name(self) -> str:
        return self.service


class Authorization(PolicyModel):
    """Mesh-wide authorization default: `allow` (no policy, no limits) or `deny` (only what a policy allows)."""

    default: Literal["allow", "deny"] = "allow"
