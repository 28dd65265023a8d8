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

from compiler.policy.base import PolicyModel

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
