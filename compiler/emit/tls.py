"""Mutual TLS: transport sockets for both sides and the file-based SDS secrets they read.

Two secrets per sidecar, each in its own SDS file: `identity` (cert.pem +
key.pem) and `trust` (ca.pem). They name files in the sidecar's `certs_dir`
and watch that folder, so a certificate rotated on disk (moved into place)
takes effect without a restart. No key or certificate material is ever part
of the compiled output.
"""

from __future__ import annotations

from compiler.emit import names
from compiler.emit.common import file_source, typed
from compiler.ir import Sidecar, UpstreamTls

IDENTITY = "identity"
TRUST = "trust"
_TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}


def secrets(s: Sidecar) -> list[dict]:
    """The two Secret resources (file names only) of a sidecar with mTLS."""
    d = s.tls.certs_dir.rstrip("/")
    watch = {"path": d}
    return [
        {
            "name": IDENTITY,
            "tls_certificate": {
                "certificate_chain": {"filename": f"{d}/cert.pem"},
                "private_key": {"filename": f"{d}/key.pem"},
                "watched_directory": watch,
            },
        },
        {"name": TRUST, "validation_context": {"trusted_ca": {"filename": f"{d}/ca.pem"}, "watched_directory": watch}},
    ]


def _ref(s: Sidecar, name: str, static: bool) -> dict:
    if static:
        return {"name": name}  # static_resources.secrets
    return {"name": name, "sds_config": file_source(names.config_path(s, names.sds_file(name)), s.config_dir)}


def _common(s: Sidecar, static: bool, san: dict) -> dict:
    return {
        "tls_params": _TLS_PARAMS,
        "tls_certificate_sds_secret_configs": [_ref(s, IDENTITY, static)],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": san}]},
            "validation_context_sds_secret_config": _ref(s, TRUST, static),
        },
    }


def upstream_socket(s: Sidecar, tls: UpstreamTls, static: bool) -> dict:
    """Originate mTLS; the server must present the destination's SPIFFE ID."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            common_tls_context=_common(s, static, {"exact": tls.peer_identity}),
            sni=tls.sni,
        ),
    }


def downstream_socket(s: Sidecar, static: bool) -> dict:
    """Terminate mTLS; any identity of the mesh's trust domain may call (authorization decides the rest)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            common_tls_context=_common(s, static, {"prefix": f"spiffe://{s.tls.trust_domain}/"}),
            require_client_certificate=True,
        ),
    }
