"""Request authentication as Envoy's `jwt_authn` does it, read from the IR's JwtCheck.

The first rule whose path matches decides what the request needs (any of its providers, or every provider;
`allow_missing`: no token is fine, a bad one is not). A token is looked for where each provider says
(headers with their prefix, query parameters; Authorization `Bearer ` and `access_token` when it names
neither), then verified against the provider's inline JWKS with `cryptography`, in Envoy's order: `exp` and
`nbf` (against the current time), `iss`, `aud` (403: the only refusal jwt_authn answers with 403, not 401),
signature (RS/PS/ES 256/384/512). Keys read from a file are not
checked here: the verdict is then uncertain.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from compiler.explain.match import path_matches
from compiler.ir import JwtCheck, JwtIssuer

DEFAULT_HEADERS = (("authorization", "Bearer "),)
DEFAULT_PARAMS = ("access_token",)


@dataclass
class JwtVerdict:
    status: int | None  # 401 (403 for a token of another audience), or None: passes
    decision: str
    rule: int | None  # index of the rule that decided what is needed
    provider: str | None = None
    claims: dict = field(default_factory=dict)
    certain: bool = True


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tokens(p: JwtIssuer, headers: dict[str, str], params: dict[str, str]) -> list[tuple[str, str]]:
    """Every token of the request for this provider, as (where, token), in the order Envoy verifies them: it
    extracts headers then query parameters and verifies from the last one found (seen live: a bad
    `access_token` parameter decides before a good Authorization header, and every token must pass)."""
    from_headers, from_params = p.from_headers, p.from_params
    if not from_headers and not from_params:
        from_headers, from_params = DEFAULT_HEADERS, DEFAULT_PARAMS
    found = []
    for name, prefix in from_headers:
        value = headers.get(name.lower())
        if value is not None and value.startswith(prefix or ""):
            found.append((f"header {name.lower()}", value[len(prefix or ""):].strip()))
    for name in from_params:
        if name in params:
            found.append((f"query {name}", params[name]))
    return found[::-1]


def _hash(alg: str):
    from cryptography.hazmat.primitives import hashes

    return {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]


def _uint(text: str) -> int:
    return int.from_bytes(_b64(text), "big")


def _verify_signature(jwk: dict, alg: str, signing_input: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    try:
        if jwk.get("kty") == "RSA" and alg[:2] in ("RS", "PS"):
            key = rsa.RSAPublicNumbers(_uint(jwk["e"]), _uint(jwk["n"])).public_key()
            pad = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(padding.MGF1(_hash(alg)), _hash(alg).digest_size)
            key.verify(signature, signing_input, pad, _hash(alg))
            return True
        if jwk.get("kty") == "EC" and alg.startswith("ES"):
            curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[jwk["crv"]]
            key = ec.EllipticCurvePublicNumbers(_uint(jwk["x"]), _uint(jwk["y"]), curve).public_key()
            half = len(signature) // 2
            der = utils.encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
            key.verify(der, signing_input, ec.ECDSA(_hash(alg)))
            return True
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return False
    return False


def verify(p: JwtIssuer, token: str, now: float | None = None) -> tuple[bool | None, str, dict, int]:
    """(valid, why, claims, status when refused); valid None when the keys are in a file this tool does not read.

    Envoy's order and answers: the token's form, `exp`/`nbf` (401), the issuer (401), the audience (403, the one
    failure jwt_authn answers with 403), then the key and the signature (401)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False, "not a JWT (three base64url parts)", {}, 401
    try:
        header = json.loads(_b64(parts[0]))
        claims = json.loads(_b64(parts[1]))
        signature = _b64(parts[2])
    except (ValueError, TypeError):
        return False, "not a JWT (undecodable header or payload)", {}, 401
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return False, "not a JWT (header or payload not an object)", {}, 401
    alg = str(header.get("alg", ""))
    now = time.time() if now is None else now
    if isinstance(claims.get("exp"), (int, float)) and now >= claims["exp"]:
        return False, "expired (exp)", claims, 401
    if isinstance(claims.get("nbf"), (int, float)) and now < claims["nbf"]:
        return False, "not yet valid (nbf)", claims, 401
    if p.issuer and claims.get("iss") != p.issuer:
        return False, f"iss {claims.get('iss')!r} is not {p.issuer!r}", claims, 401
    if p.audiences:
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(a in p.audiences for a in auds):
            return False, f"aud {aud!r} is none of {', '.join(p.audiences)}", claims, 403
    if p.jwks is None:
        return None, f"signature not checked: keys in {p.jwks_file}", claims, 0
    try:
        keys = json.loads(p.jwks).get("keys", [])
    except (ValueError, AttributeError):
        return False, "the provider's JWKS does not parse", claims, 401
    kid = header.get("kid")
    candidates = [k for k in keys if isinstance(k, dict) and (kid is None or k.get("kid") == kid)]
    if not candidates:
        return False, f"no key {kid!r} in the provider's JWKS", claims, 401
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    if not alg.startswith(("RS", "PS", "ES")) or alg[2:] not in ("256", "384", "512"):
        return False, f"algorithm {alg!r} not accepted", claims, 401
    if not any(_verify_signature(k, alg, signing_input, signature) for k in candidates):
        return False, "signature does not verify", claims, 401
    return True, f"valid ({alg}, kid {kid})" if kid else f"valid ({alg})", claims, 0


def check(j: JwtCheck, path: str, headers: dict[str, str], params: dict[str, str], now: float | None = None) -> JwtVerdict:
    """What the listener's jwt_authn filter does to the request (path: normalised, without the query)."""
    rule = None
    for i, r in enumerate(j.rules):
        if not r.paths or any(path_matches(p, path) for p in r.paths):
            rule = i
            break
    if rule is None:
        return JwtVerdict(None, f"no rule covers {path}: no token needed (none verified)", None)
    r = j.rules[rule]
    names = r.providers or tuple(p.name for p in j.providers)
    providers = [p for p in j.providers if p.name in names]
    where = ", ".join(c.value for c in r.paths) or "every path"
    found = [(p, toks) for p in providers if (toks := _tokens(p, headers, params))]
    if not found:
        if r.allow_missing:
            return JwtVerdict(None, f"rules[{rule}] ({where}): no token, allowed (allow_missing)", rule)
        return JwtVerdict(401, f"rules[{rule}] ({where}): a token from {' or '.join(names)} is required: none sent: 401", rule)
    reasons, status = [], 401
    for p, toks in found:
        verdicts = [(place, *verify(p, tok, now)) for place, tok in toks]
        several = len(verdicts) > 1
        bad = next(((place, why, claims, refused) for place, ok, why, claims, refused in verdicts if ok is False), None)
        if bad is None:
            claims = verdicts[-1][3]  # the last verified token's payload is the one recorded
            text = "; ".join(f"token in {place} {why}" for place, _, why, _, _ in verdicts)
            certain = all(v[1] is True for v in verdicts)
            return JwtVerdict(None, f"rules[{rule}] ({where}): {p.name}: {text}", rule, p.name, claims, certain=certain)
        place, why, claims, refused = bad
        reasons.append(f"{p.name}: token in {place}: {why}" + (" (every token must pass)" if several else ""))
        if refused == 403 and (not p.issuer or claims.get("iss") == p.issuer):
            status = 403  # the token is this provider's; only its audience is wrong
    return JwtVerdict(status, f"rules[{rule}] ({where}): token refused: {'; '.join(reasons)}: {status}", rule)


def removed_header(j: JwtCheck, verdict: JwtVerdict, headers: dict[str, str]) -> str | None:
    """The header a verified token came in, when its provider does not forward it (`forward_token: false`):
    Envoy removes it before the request goes on."""
    for p in j.providers:
        if p.name == verdict.provider and not p.forward_token:
            for place, _ in _tokens(p, headers, {}):
                return place.split(" ", 1)[1]
    return None


def forwarded_claims(j: JwtCheck, verdict: JwtVerdict) -> list[tuple[str, str]]:
    """Headers the provider sets from claims (`forward_claims`)."""
    out = []
    for p in j.providers:
        if p.name == verdict.provider:
            for claim, header in p.forward_claims:
                if claim in verdict.claims:
                    out.append((header, str(verdict.claims[claim])))
    return out


__all__ = ["JwtVerdict", "check", "forwarded_claims", "removed_header", "verify"]
