"""PeerAuthentication, AuthorizationPolicy and RequestAuthentication -> meshc mTLS modes and policies."""

from __future__ import annotations

import itertools

from compiler.importer.model import NOT_YET, Context, Doc, name_of
from compiler.importer.read import Resource

ROOT_NAMESPACE = "istio-system"
_MODES = {"STRICT": "strict", "PERMISSIVE": "permissive", "DISABLE": "disable"}


def _targets(res: Resource, ctx: Context) -> list[str] | None:
    """The services a selector picks; None: no selector (mesh- or namespace-wide)."""
    sel = (res.spec.get("selector") or res.spec.get("workloadSelector") or {}).get("matchLabels")
    if not sel:
        return None
    picked = [w.name for w in ctx.by_labels(sel, res.namespace)]
    if not picked:
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


def _rules(res: Resource, path: tuple, rule: dict, ctx: Context) -> list[dict]:
    base: dict = {}
    callers = []
    for i, f in enumerate(rule.get("from") or []):
        src = f.get("source") or {}
        for key in src:
            if key == "principals":
                for j, p in enumerate(src[key]):
                    name = _principal(res, path + ("from", i, "source", key, j), str(p), ctx)
                    if name:
                        callers.append(name)
            elif key == "requestPrincipals":
                continue
            else:
                ctx.refuse(res, path + ("from", i, "source", key), f"{key}: {NOT_YET}"
                           if key in ("namespaces", "ipBlocks", "remoteIpBlocks", "notPrincipals", "notNamespaces",
                                      "notIpBlocks", "notRemoteIpBlocks", "notRequestPrincipals")
                           else f"{key}: meshc has no equivalent")
    if callers:
        base["from"] = sorted(set(callers), key=callers.index)
    claim_sets: list[list[dict]] = []
    for i, f in enumerate(rule.get("from") or []):
        rps = (f.get("source") or {}).get("requestPrincipals")
        if rps:
            options = []
            for j, rp in enumerate(rps):
                iss, _, sub = str(rp).rpartition("/")
                if rp == "*" or not iss or not sub or "*" in rp:
                    ctx.refuse(res, path + ("from", i, "source", "requestPrincipals", j),
                               f"{rp}: meshc matches a token's iss and sub exactly (a RequestAuthentication without "
                               "allow_missing requires a token)")
                    continue
                options.append({"iss": iss, "sub": sub})
            claim_sets.append(options)
    operations = []
    for i, t in enumerate(rule.get("to") or []):
        op = t.get("operation") or {}
        out: dict = {}
        for key, value in op.items():
            if key == "paths":
                out["paths"] = [_path(res, path + ("to", i, "operation", "paths", j), str(p), ctx)
                                for j, p in enumerate(value)]
                out["paths"] = [p for p in out["paths"] if p]
            elif key == "methods":
                out["methods"] = [str(m) for m in value]
            else:
                ctx.refuse(res, path + ("to", i, "operation", key), f"{key}: {NOT_YET}" if key.startswith("not")
                           else f"{key}: meshc authorizes per service (one port, its own host)")
        operations.append(out)
    conditions: list[list[tuple]] = []
    for i, w in enumerate(rule.get("when") or []):
        key, values = str(w.get("key", "")), [str(v) for v in w.get("values") or []]
        if w.get("notValues"):
            ctx.refuse(res, path + ("when", i, "notValues"), f"notValues: {NOT_YET}")
        if key.startswith("request.headers[") and key.endswith("]"):
            name = key[len("request.headers["):-1].lower()
            conditions.append([("header", name, v) for v in values])
        elif key.startswith("request.auth.claims[") and key.endswith("]"):
            claim = key[len("request.auth.claims["):-1]
            conditions.append([("claim", claim, v) for v in values])
        else:
            ctx.refuse(res, path + ("when", i, "key"), f"{key}: {NOT_YET}" if key.startswith(("source.", "remote."))
                       else f"{key}: meshc conditions are request headers and JWT claims")
    out_rules = []
    for op in operations or [{}]:
        for combo in itertools.product(*conditions, *[[("claims", c) for c in s] for s in claim_sets if s]):
            one = dict(base) | op
            for cond in combo:
                if cond[0] == "header":
                    value = cond[2]
                    match = {"name": cond[1]}
                    if value == "*":
                        match["present"] = True
                    elif value.endswith("*"):
                        match["prefix"] = value[:-1]
                    else:
                        match["exact"] = value
                    one.setdefault("headers", []).append(match)
                elif cond[0] == "claim":
                    one.setdefault("claims", {})[cond[1]] = cond[2]
                else:
                    one.setdefault("claims", {}).update(cond[1])
            out_rules.append(one)
    return out_rules


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
        body = {"kind": "RequestAuthentication", "service": name, "providers": providers,
                "rules": [{"allow_missing": True}]}
        ctx.add(name, Doc(f"{name}.yaml", body, [
            f"from RequestAuthentication {res.name} ({res.where()}); allow_missing: like Istio, a request "
            "without a token passes (an AuthorizationPolicy decides), an invalid one gets 401"]))
