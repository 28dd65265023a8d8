"""An inline JWKS as Envoy's jwt_authn reads it (jwt_verify_lib), checked before anything ships.

Envoy refuses the whole provider (so the sidecar does not start) when the key set is empty, a key lacks
`kty` or a member its kind needs, or a value is not base64url; a malformed key beside a good one is
silently dropped, which meshc refuses as well: a key the user wrote and Envoy ignores is a mistake.
"""

from __future__ import annotations

import json
import re

_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")  # unpadded: Envoy refuses `=` padding

# kty -> (members it needs, the curves it takes or None, the `alg` values it takes)
_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None, tuple[str, ...]]] = {
    "RSA": (("n", "e"), None, ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")),
    "EC": (("crv", "x", "y"), ("P-256", "P-384", "P-521"), ("ES256", "ES384", "ES512")),
    "oct": (("k",), None, ("HS256", "HS384", "HS512")),
    "OKP": (("crv", "x"), ("Ed25519",), ("EdDSA",)),
}
_EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def check_jwks(text: str) -> str:
    """`text` if it is a JWKS document Envoy loads with every key; ValueError naming the first problem."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"jwks is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('jwks must be a JWKS document: {"keys": [...]}')
    if not doc["keys"]:
        raise ValueError("jwks has no keys (Envoy refuses an empty key set)")
    for i, key in enumerate(doc["keys"]):
        problem = _key_problem(key)
        if problem:
            raise ValueError(f"jwks keys[{i}]: {problem}")
    return text


def _key_problem(key) -> str | None:
    if not isinstance(key, dict):
        return "a key must be a JSON object"
    kty = key.get("kty")
    if kty not in _KINDS:
        return "no kty" if kty is None else f"kty {kty!r} is not one Envoy knows ({', '.join(_KINDS)})"
    members, curves, algs = _KINDS[kty]
    for member in members:
        value = key.get(member)
        if not isinstance(value, str) or not value:
            return f"kty {kty} needs {member!r}"
        if member != "crv" and (not _B64URL.match(value) or len(value) % 4 == 1):
            return f"{member!r} is not unpadded base64url"
    if curves is not None and key["crv"] not in curves:
        return f"crv {key['crv']!r} is not one Envoy takes for {kty} ({', '.join(curves)})"
    alg = key.get("alg")
    if alg is not None:
        if alg not in algs:
            return f"alg {alg!r} does not fit a {kty} key ({', '.join(algs)})"
        if kty == "EC" and _EC_ALG[key["crv"]] != alg:
            return f"alg {alg} does not fit curve {key['crv']} ({_EC_ALG[key['crv']]})"
    return None
