"""PeerAuthentication, AuthorizationPolicy and RequestAuthentication -> meshc mTLS modes and policies."""

from __future__ import annotations

import ipaddress
import itertools
import re

from compiler.importer.model import Context, Doc, name_of
from compiler.importer.read import Resource

ROOT_NAMESPACE = "istio-system"
_MODES = {"STRICT": "strict", "PERMISSIVE": "permissive", "DISABLE": "disable"}


def _targets(res: Resource, ctx: Context) -> list[str] | None:
    """The services a selector picks; None: no selector (mesh- or namespace-wide)."""
    sel = (res.spec.get("selector") or res.spec.get("workloadSelector") or {}).get("matchLabels")
    if not sel:
        return None
    picked = [w.name for w in ctx.by_labels(sel, res.namespace)]
    versions = [w.name for w in ctx.workloads.values() if w.namespace == res.namespace and any(
        all(labels.get(k) == v for k, v in sel.items()) for labels in w.version_labels.values())]
    if not picked and versions:
        ctx.refuse(res, ("spec", "selector"), f"selects {sel}: one version of {versions[0]}; meshc security "
                   "policies are per service")
    elif not picked:
        ctx.refuse(res, ("spec", "selector"), f"selects {sel}: no imported Service has these labels")
    return picked


def import_peer_authentication(res: Resource, ctx: Context) -> None:
    mode = ((res.spec.get("mtls") or {}).get("mode")) or "UNSET"
    if res.spec.get("portLevelMtls"):
        ctx.refuse(res, ("spec", "portLevelMtls"), "meshc Services have one port: set the service's mtls")
    if mode == "UNSET":
        return
    value = _MODES.get(mode)
    targets = _targets(res, ctx)
    if targets is None and res.namespace == ROOT_NAMESPACE:
        ctx.mesh.setdefault("mtls", {})["mode"] = value
        ctx.mesh_comments.append(f"mtls: from PeerAuthentication {res.name} ({res.where('spec', 'mtls')}), mesh-wide")
        return
    if targets is None:
        targets = [w.name for w in ctx.workloads.values() if w.namespace == res.namespace]
    for name in targets:
        ctx.workloads[name].service["mtls"] = value
        ctx.docs[name][0].comments.append(f"mtls {value}: from PeerAuthentication {res.name} ({res.where()})")


# ------------------------------------------------------------------ authorization

def import_authorization_policy(res: Resource, ctx: Context, policies: dict[str, Doc]) -> None:
    spec = res.spec
    action = spec.get("action", "ALLOW")
    if action not in ("ALLOW", "DENY"):
        ctx.refuse(res, ("spec", "action"), f"{action}: meshc allows or denies (an external authorizer: meshc has none)")
        return
    targets = _targets(res, ctx)
    if targets is None:
        if res.namespace == ROOT_NAMESPACE and not spec.get("rules") and action == "ALLOW":
            ctx.mesh["authorization"] = {"default": "deny"}
            ctx.mesh_comments.append(f"authorization: deny from the allow-nothing AuthorizationPolicy {res.name} "
                                     f"({res.where()})")
            return
        targets = [w.name for w in ctx.workloads.values() if w.namespace == res.namespace]
    if "rules" not in spec or not spec["rules"]:
        if action == "ALLOW":
            ctx.refuse(res, ("spec",), "allow-nothing for some services: meshc refuses by default only mesh-wide "
                       "(Mesh authorization.default: deny)")
        return
    rules = []
    for i, rule in enumerate(spec["rules"]):
        before = len(ctx.problems)
        converted = _rules(res, ("spec", "rules", i), rule or {}, ctx)
        if len(ctx.problems) > before:  # a rule without one of its conditions would match more than it did
            ctx.refuse(res, ("spec", "rules", i), "this rule is left out as a whole (a condition of it is not imported)")
            continue
        rules.extend(converted)
    if not rules:
        return
    for name in targets:
        doc = policies.get(name)
        if doc is None:
            doc = policies[name] = Doc(f"{name}.yaml", {"kind": "AuthorizationPolicy", "service": name})
            ctx.add(name, doc)
        doc.comments.append(f"{action.lower()}: from AuthorizationPolicy {res.name} ({res.where()})")
        doc.body.setdefault(action.lower(), []).extend(rules)


_SOURCE = {"namespaces": "namespaces", "notNamespaces": "not_namespaces", "ipBlocks": "ip_blocks",
           "notIpBlocks": "not_ip_blocks"}
_SOURCE_NONE = {
    "remoteIpBlocks": "meshc never reads X-Forwarded-For: authorize on ipBlocks (the direct peer)",
    "notRemoteIpBlocks": "meshc never reads X-Forwarded-For: authorize on notIpBlocks (the direct peer)",
    "notRequestPrincipals": "meshc has no negated token condition",
}
_WHEN = {"source.namespace": ("namespaces", "not_namespaces"), "source.ip": ("ip_blocks", "not_ip_blocks")}


def _rules(res: Resource, path: tuple, rule: dict, ctx: Context) -> list[dict]:
    """One Istio rule -> meshc rules: Istio ORs its sources, its operations and the values of a `when`;
    a meshc rule ANDs its conditions (each a list met by any item), so each combination is one rule."""
    sources: list[list[dict]] = []
    for i, f in enumerate(rule.get("from") or []):
        sources.append(_source(res, path + ("from", i, "source"), f.get("source") or {}, ctx))
    operations = []
    for i, t in enumerate(rule.get("to") or []):
        op = t.get("operation") or {}
        out: dict = {}
        for key, value in op.items():
            if key in ("paths", "notPaths"):
                converted = [_path(res, path + ("to", i, "operation", key, j), str(p), ctx) for j, p in enumerate(value)]
                out["paths" if key == "paths" else "not_paths"] = [p for p in converted if p]
            elif key in ("methods", "notMethods"):
                out["methods" if key == "methods" else "not_methods"] = [str(m) for m in value]
            else:
                ctx.refuse(res, path + ("to", i, "operation", key), f"{key}: meshc authorizes per service (one port, "
                           "its own host)")
        operations.append(out)
    conditions: list[list[dict]] = []
    for i, w in enumerate(rule.get("when") or []):
        key, values = str(w.get("key", "")), [str(v) for v in w.get("values") or []]
        negated = [str(v) for v in w.get("notValues") or []]
        wpath = path + ("when", i)
        if key in _WHEN:
            yes, no = _WHEN[key]
            if values:
                conditions.append([{yes: values}])
            if negated:
                conditions.append([{no: negated}])
        elif key == "source.principal":
            if values:
                names = [_principal(res, wpath + ("values",), v, ctx) for v in values]
                conditions.append([{"from": [n for n in names if n]}])
            if negated:
                names = [_principal(res, wpath + ("notValues",), v, ctx) for v in negated]
                conditions.append([{"not_from": [n for n in names if n]}])
        elif key.startswith("request.headers[") and key.endswith("]"):
            name = key[len("request.headers["):-1].lower()
            if negated:
                ctx.refuse(res, wpath + ("notValues",), "notValues on a header: meshc has no negated header condition")
            conditions.append([{"headers": [_header(name, v)]} for v in values])
        elif key.startswith("request.auth.claims[") and key.endswith("]"):
            claim = key[len("request.auth.claims["):-1]
            if negated:
                ctx.refuse(res, wpath + ("notValues",), "notValues on a claim: meshc has no negated claim condition")
            conditions.append([{"claims": {claim: v}} for v in values])
        else:
            ctx.refuse(res, wpath + ("key",), f"{key}: meshc conditions are the caller (source.principal, "
                       "source.namespace, source.ip), request headers and JWT claims")
    if rule.get("from") and not any(sources):
        return []  # every source was refused (listed): the rule is left out
    out_rules = []
    alternatives = [x for s in sources for x in s] or [{}]
    for combo in itertools.product(alternatives, operations or [{}], *conditions):
        one: dict = {}
        for part in combo:
            for key, value in part.items():
                if key == "headers":
                    one.setdefault(key, []).extend(value)
                elif key == "claims":
                    one.setdefault(key, {}).update(value)
                elif key not in one:
                    one[key] = list(value)
                elif key.startswith("not_"):  # none of A and none of B: none of either
                    one[key] += [v for v in value if v not in one[key]]
                elif key == "ip_blocks":  # in one of A and in one of B: the blocks inside both
                    one[key] = _cidr_and(one[key], value)
                else:  # any of A and any of B: any of both
                    one[key] = [v for v in one[key] if v in value]
        if any(v == [] for v in one.values()):
            ctx.note(res, path, "a combination of its conditions that no request meets is left out")
            continue
        out_rules.append(one)
    return out_rules


def _cidr_and(a: list[str], b: list[str]) -> list[str]:
    out = []
    for x in a:
        for y in b:
            try:
                nx, ny = ipaddress.ip_network(x, strict=False), ipaddress.ip_network(y, strict=False)
            except ValueError:
                out.extend(v for v in (x, y) if v not in out)  # meshc check names the bad one
                continue
            if nx.version == ny.version and (nx.subnet_of(ny) or ny.subnet_of(nx)):
                inner = x if nx.subnet_of(ny) else y
                if inner not in out:
                    out.append(inner)
    return out


def _source(res: Resource, path: tuple, src: dict, ctx: Context) -> list[dict]:
    """One Istio source (its fields ANDed) -> meshc conditions; several request principals are several."""
    base: dict = {}
    for key, value in src.items():
        if key in ("principals", "notPrincipals"):
            whole = [str(p).split("/")[2] for p in value if re.fullmatch(r"[^/]+/ns/[^/]+/sa/\*", str(p))]
            if whole:  # <trust domain>/ns/<namespace>/sa/*: every account of a namespace
                base["namespaces" if key == "principals" else "not_namespaces"] = whole
            names = [_principal(res, path + (key, j), str(p), ctx) for j, p in enumerate(value)
                     if not str(p).endswith("/sa/*")]
            if names or not whole:
                base["from" if key == "principals" else "not_from"] = [n for n in dict.fromkeys(names) if n]
        elif key in _SOURCE:
            base[_SOURCE[key]] = [str(v) for v in value]
        elif key in _SOURCE_NONE:
            ctx.refuse(res, path + (key,), f"{key}: {_SOURCE_NONE[key]}")
        elif key != "requestPrincipals":
            ctx.refuse(res, path + (key,), f"{key}: meshc has no equivalent")
    out = []
    for j, rp in enumerate(src.get("requestPrincipals") or []):
        iss, _, sub = str(rp).rpartition("/")
        if rp == "*" or not iss or not sub or "*" in rp:
            ctx.refuse(res, path + ("requestPrincipals", j),
                       f"{rp}: meshc matches a token's iss and sub exactly (a RequestAuthentication without "
                       "allow_missing requires a token)")
            continue
        out.append(base | {"claims": {"iss": iss, "sub": sub}})
    return out if src.get("requestPrincipals") else [base]


def _header(name: str, value: str) -> dict:
    if value == "*":
        return {"name": name, "present": True}
    if value.endswith("*"):
        return {"name": name, "prefix": value[:-1]}
    return {"name": name, "exact": value}


def _principal(res: Resource, path: tuple, principal: str, ctx: Context) -> str | None:
    parts = principal.split("/")
    if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa":
        domain, ns, account = parts[0], parts[2], parts[4]
        if domain not in ("cluster.local", "*"):
            ctx.mesh.setdefault("trust_domain", domain)
        name = ctx.by_account(ns, account)
        if name is None and ns == ROOT_NAMESPACE and "ingressgateway" in account:
            gws = [d.body["name"] for d in ctx.edge if d.body.get("kind") == "Gateway"]
            name = gws[0] if gws else None
        if name is not None:
            return name
        ctx.refuse(res, path, f"{principal}: no imported Service runs as service account {account} in {ns}")
        return None
    ctx.refuse(res, path, f"{principal}: meshc names callers by service (cluster.local/ns/<ns>/sa/<account>)")
    return None


def _path(res: Resource, path: tuple, value: str, ctx: Context) -> dict | None:
    if value == "*":
        return {"prefix": "/"}
    if value.endswith("/*"):
        return {"prefix": value[:-1]}
    if value.endswith("*") and "*" not in value[:-1]:
        ctx.note(res, path, f"{value}: a meshc prefix is a path prefix ({value[:-1]} and below it)")
        return {"prefix": value[:-1]}
    if "*" in value:
        ctx.refuse(res, path, f"{value}: a suffix or inner wildcard (meshc paths are exact, prefixes or regex)")
        return None
    return {"exact": value}


# ------------------------------------------------------------------ request authentication

def import_request_authentication(res: Resource, ctx: Context) -> None:
    targets = _targets(res, ctx)
    if targets is None:
        ctx.refuse(res, ("spec",), "no selector: a meshc RequestAuthentication names one service")
        return
    providers = []
    for i, jr in enumerate(res.spec.get("jwtRules") or []):
        path = ("spec", "jwtRules", i)
        issuer = str(jr.get("issuer", ""))
        p: dict = {"name": name_of(issuer.split("//")[-1]) or f"provider-{i}", "issuer": issuer}
        if jr.get("audiences"):
            p["audiences"] = [str(a) for a in jr["audiences"]]
        if jr.get("jwks"):
            p["jwks"] = str(jr["jwks"])
        else:
            p["jwks_file"] = f"/etc/meshc/jwks/{p['name']}.json"
            ctx.note(res, path + ("jwksUri",), f"meshc reads keys inline (jwks) or from a file (jwks_file), never "
                     f"from a URL: save {jr.get('jwksUri', 'the JWKS')} at {p['jwks_file']}")
        if jr.get("fromHeaders"):
            p["from_headers"] = [{"name": str(h.get("name")).lower(), "prefix": h.get("prefix", "")}
                                 for h in jr["fromHeaders"]]
        if jr.get("fromParams"):
            p["from_params"] = [str(x) for x in jr["fromParams"]]
        if jr.get("forwardOriginalToken"):
            p["forward_token"] = True
        if jr.get("outputClaimToHeaders"):
            p["forward_claims"] = {c["claim"]: str(c["header"]).lower() for c in jr["outputClaimToHeaders"]}
        for key in ("outputPayloadToHeader", "fromCookies", "timeout"):
            if key in jr:
                ctx.refuse(res, path + (key,), "meshc has no equivalent")
        providers.append(p)
    for name in targets:
        if any(d.body["kind"] == "RequestAuthentication" for d in ctx.docs.get(name, [])):
            ctx.refuse(res, ("spec", "selector"), f"a second RequestAuthentication for {name}: meshc has one per "
                       "service (list every provider in the first)")
            continue
        body = {"kind": "RequestAuthentication", "service": name, "providers": providers,
                "rules": [{"allow_missing": True}]}
        ctx.add(name, Doc(f"{name}.yaml", body, [
            f"from RequestAuthentication {res.name} ({res.where()}); allow_missing: like Istio, a request "
            "without a token passes (an AuthorizationPolicy decides), an invalid one gets 401"]))
