"""Short texts for the graph's labels: a Route rule's match, a caller's authorization, a call's mTLS.

Each function turns one piece of the resolved view or the IR into a few words
a reviewer reads on a picture (`end-user: jason`, `allowed: GET,HEAD /ratings/`,
`mTLS strict`); nothing here decides anything the compiler does not.
"""

from __future__ import annotations

from compiler.ir import Access, AccessRule, Cluster, HeaderCondition, PathCondition, Sidecar
from compiler.policy.route import Match, RouteRule


def _header(h) -> str:
    if h.exact is not None:
        return f"{h.name}: {h.exact}"
    if h.prefix is not None:
        return f"{h.name}: {h.prefix}*"
    if h.regex is not None:
        return f"{h.name} ~ {h.regex}"
    return f"{h.name} {'present' if h.present else 'absent'}"


def _query(q) -> str:
    if q.exact is not None:
        return f"?{q.name}={q.exact}"
    if q.prefix is not None:
        return f"?{q.name}={q.prefix}*"
    if q.regex is not None:
        return f"?{q.name} ~ {q.regex}"
    return f"?{q.name}"


def _cookie(c) -> str:
    return f"cookie {c.name}={c.exact}" if c.exact is not None else f"cookie {c.name} ~ {c.regex}"


def path_text(path) -> str:
    """A policy PathMatch: `/reviews*` (prefix), `= /x` (exact), `~ re` (regex); '' for the prefix `/`."""
    if path.prefix is not None:
        return "" if path.prefix == "/" else f"{path.prefix}*"
    if path.exact is not None:
        return f"= {path.exact}"
    return f"~ {path.regex}"


def callers_text(callers) -> str:
    """`from reviews v3`, `from ingress or reviews`: the callers a rule is limited to (`match.callers`: only their
    sidecars have it, and with versions only those versions' pods match it); '' for every caller."""
    if not callers:
        return ""
    texts = {c.service + (f" {'/'.join(sorted(c.versions))}" if c.versions else "") for c in callers}
    return "from " + " or ".join(sorted(texts))


def match_text(match: Match) -> str:
    """What a rule's requests have in common, '' when it matches every request from every caller."""
    parts = []
    if match.methods:
        parts.append(",".join(match.methods))
    if p := path_text(match.path):
        parts.append(p)
    parts += [_header(h) for h in match.headers]
    parts += [_cookie(c) for c in match.cookies]
    parts += [_query(q) for q in match.query]
    if match.callers:
        parts.append(callers_text(match.callers))
    return " ".join(parts)


def rule_texts(rules: list[RouteRule]) -> list[str]:
    """Each rule's match text; a rule matching everything after earlier rules is `else`, alone it is ''."""
    out = []
    for i, rule in enumerate(rules):
        text = match_text(rule.match)
        out.append(text or ("else" if i else ""))
    return out


def rule_effects(rule: RouteRule, text: str) -> list[str]:
    """What a rule does besides choosing versions, one line each: the caller's sidecar answers itself
    (`= /healthz: answered 200`, `/old/*: redirect 301`) or injects faults (`fault abort 503 10%`)."""
    scope = "otherwise: " if text == "else" else f"{text}: " if text else ""
    lines = []
    if rule.respond is not None:
        lines.append(f"{scope}answered {rule.respond.status}")
    if rule.redirect is not None:
        lines.append(f"{scope}redirect {rule.redirect.code}")
    if rule.fault is not None:
        parts = []
        if rule.fault.delay is not None:
            parts.append(f"delay {rule.fault.delay.fixed} {rule.fault.delay.percent}%")
        if rule.fault.abort is not None:
            a = rule.fault.abort
            what = f"grpc {a.grpc_status}" if a.grpc_status is not None else str(a.status)
            parts.append(f"abort {what} {a.percent}%")
        if rule.fault.headers:
            parts.append("if " + " ".join(_header(h) for h in rule.fault.headers))
        lines.append(f"{scope}fault " + ", ".join(parts))
    return lines


# -- authorization (from the callee's inbound listener in the IR) --


def _cond_path(p: PathCondition) -> str:
    return {"prefix": f"{p.value}*", "path_prefix": p.value, "exact": f"= {p.value}"}.get(p.kind, f"~ {p.value}")


def _cond_header(h: HeaderCondition) -> str:
    if h.kind in ("present", "absent"):
        return f"{h.name} {h.kind}"
    return f"{h.name}: {h.value}{'*' if h.kind == 'prefix' else ''}" if h.kind != "regex" else f"{h.name} ~ {h.value}"


def _conditions(rule: AccessRule) -> str:
    parts = []
    if rule.methods:
        parts.append(",".join(rule.methods))
    if rule.paths:
        parts.append(", ".join(_cond_path(p) for p in rule.paths))
    if rule.not_methods:
        parts.append("not " + ",".join(rule.not_methods))
    if rule.not_paths:
        parts.append("not " + ", ".join(_cond_path(p) for p in rule.not_paths))
    parts += [_cond_header(h) for h in rule.headers]
    parts += [f"claim {k}={v}" for k, v in rule.claims]
    if rule.ip_blocks:
        parts.append("from " + ", ".join(rule.ip_blocks))
    if rule.not_ip_blocks:
        parts.append("not from " + ", ".join(rule.not_ip_blocks))
    return " ".join(parts)


def authz_text(access: Access | None, principal: str | None) -> tuple[str, str]:
    """(verdict, text) of a callee's authorization for calls from `principal` (its SPIFFE ID; None without a
    certificate, so only rules naming no caller apply).

    verdict: `open` (nothing restricts), `allowed`, `partial` (some requests), `denied`; with dry_run the
    text says what would happen and nothing is refused.
    """
    if access is None:
        return "open", "authz open"

    def applies(rule: AccessRule) -> bool:
        """The rule is about this caller: its callers and namespaces name it, its `not_` ones do not."""
        if rule.principals and principal not in rule.principals:
            return False
        if rule.namespaces and not (principal and principal.startswith(rule.namespaces)):
            return False
        return principal is None or not (principal in rule.not_principals or principal.startswith(rule.not_namespaces or ("\0",)))

    denies = [r for r in access.deny if applies(r)]
    allows = None if access.allow is None else [r for r in access.allow if applies(r)]
    if any(not _conditions(r) for r in denies) or (allows is not None and not allows):
        verdict, text = "denied", "denied"
    else:
        limited = allows is not None and all(_conditions(r) for r in allows)
        text = "allowed: " + " or ".join(_conditions(r) for r in allows) if limited else "allowed"
        if denies:
            text += " except " + " or ".join(_conditions(r) for r in denies)
        verdict = "partial" if (limited or denies) else "allowed"
    if access.dry_run:
        return verdict, f"dry-run: would be {text}" if verdict != "allowed" else "dry-run: allowed"
    return verdict, text


# -- transport --


def transport_text(caller: Sidecar | None, cluster: Cluster | None, callee_mode: str | None) -> str:
    """How the caller's sidecar connects: `mTLS strict|permissive`, `TLS 1.3 sni=...` (externals), `plaintext`."""
    if cluster is None:
        return "plaintext"
    if cluster.external:
        tls = cluster.external_tls
        return f"TLS {tls.min_version}+ sni={tls.sni}" if tls else "plaintext"
    if cluster.upstream_tls is not None and caller is not None and caller.tls is not None:
        return f"mTLS {callee_mode or 'strict'}"
    return "plaintext"
