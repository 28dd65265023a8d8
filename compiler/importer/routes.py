"""VirtualService `http` routes -> a meshc Route on the destination service (one rule per Istio match)."""

from __future__ import annotations

import re

from compiler.importer import callers
from compiler.importer.model import NOT_YET, Context, Doc, duration, percent
from compiler.importer.read import Resource

GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
    "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
RETRY_ON = ("5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
            "retriable-status-codes")
_MATCH_UNSUPPORTED = {
    "authority": "meshc routes are per service: the Host is the service",
    "port": "meshc Services have one port",
    "withoutHeaders": NOT_YET + " (negated header matches; a header `present: false` is the absent case)",
    "scheme": "meshc matches no scheme",
    "statPrefix": "meshc names its own stats",
}
_RULE_UNSUPPORTED = {
    "delegate": "meshc has no delegated routes",
}


def import_virtual_service(res: Resource, ctx: Context) -> None:
    spec = res.spec
    gateways = [g for g in spec.get("gateways") or ["mesh"]]
    hosts = spec.get("hosts") or []
    if any(g != "mesh" for g in gateways):
        from compiler.importer import gateway_rules
        from compiler.importer.edge import gateway_routes

        carried = gateway_routes(res, [g for g in gateways if g != "mesh"], ctx)
        if "mesh" not in gateways:
            gateway_rules.collect(res, carried, ctx)
            return
    if spec.get("tls"):
        ctx.refuse(res, ("spec", "tls"), "tls routes: meshc routes no TLS by SNI")
    if spec.get("exportTo"):
        ctx.note(res, ("spec", "exportTo"), "ignored: meshc routes are seen by every caller listing the service")
    services = []
    for i, host in enumerate(hosts):
        svc = ctx.resolve(str(host), res.namespace)
        if svc is None:
            ctx.refuse(res, ("spec", "hosts", i), f"host {host}: no Kubernetes Service or ServiceEntry of that name")
        else:
            services.append(svc)
    if len(set(services)) > 1:
        ctx.refuse(res, ("spec", "hosts", 1), "a meshc Route is for one service: only the first host is imported")
    if not services:
        return
    service = services[0]
    if any(d.body["kind"] == "Route" for d in ctx.docs.get(service, [])):
        ctx.refuse(res, ("spec", "hosts"), f"a second VirtualService for {service}: meshc has one Route per service "
                   "(merge the rules into the first)")
        return
    rules = []
    for i, http in enumerate(spec.get("http") or []):
        rules.extend(_http_rule(res, ("spec", "http", i), http, service, ctx))
    for i, tcp in enumerate(spec.get("tcp") or []):
        if i > 0 or rules:
            ctx.refuse(res, ("spec", "tcp", i), "a tcp service's meshc Route has one rule: its weights per connection")
            continue
        for key in sorted(set(tcp) - {"route", "match"}):
            ctx.refuse(res, ("spec", "tcp", i, key), "meshc tcp routes only split connections by weight")
        if tcp.get("match"):
            ctx.refuse(res, ("spec", "tcp", i, "match"), "meshc tcp routes match every connection")
            continue
        to = _destinations(res, ("spec", "tcp", i, "route"), tcp.get("route") or [], service, ctx)
        if to:
            rules.append({"to": to})
    if not rules:
        return
    file = f"{service}.yaml" if service in ctx.workloads else "external.yaml"
    (ctx.add if service in ctx.workloads else lambda _, d: ctx.edge.append(d))(service, Doc(file, {"kind": "Route", "service": service, "rules": rules},
                         [f"from VirtualService {res.name} ({res.where()}): one rule per Istio match, in order"]))


def _http_rule(res: Resource, path: tuple, http: dict, service: str, ctx: Context) -> list[dict]:
    rule: dict = {}
    for key, why in _RULE_UNSUPPORTED.items():
        if key in http:
            ctx.refuse(res, path + (key,), why)
    if "route" in http:
        to = _destinations(res, path + ("route",), http["route"], service, ctx)
        if to is None:
            return []
        rule["to"] = to
    elif "redirect" in http:
        rule["redirect"] = _redirect(res, path + ("redirect",), http["redirect"], ctx)
    elif "directResponse" in http:
        dr = http["directResponse"]
        rule["respond"] = {"status": int(dr.get("status", 200))}
        body = (dr.get("body") or {})
        if "string" in body:
            rule["respond"]["body"] = str(body["string"])
        elif body:
            ctx.refuse(res, path + ("directResponse", "body"), "only a `string` body (meshc answers text)")
    else:
        ctx.refuse(res, path, "a rule with no route, redirect or directResponse")
        return []
    if "timeout" in http:
        rule["timeout"] = duration(http["timeout"], res, path + ("timeout",), ctx)
    if http.get("retries"):
        _retries(res, path + ("retries",), http["retries"], rule, ctx)
    if http.get("fault"):
        _fault(res, path + ("fault",), http["fault"], rule, ctx)
    mirrors = list(http.get("mirrors") or [])
    if http.get("mirror"):
        mirrors.append({"destination": http["mirror"], "percentage": http.get("mirrorPercentage",
                                                                                http.get("mirror_percent", 100))})
    for j, m in enumerate(mirrors):
        mpath = path + (("mirrors", j) if "mirrors" in http else ("mirror",))
        dest = m.get("destination") or {}
        target = ctx.resolve(str(dest.get("host", "")), res.namespace)
        if target is None:
            ctx.refuse(res, mpath, f"mirror host {dest.get('host')}: no Service or ServiceEntry of that name")
            continue
        entry: dict = {"to": str(dest.get("subset") or _default_version(target, ctx))}
        if target != service:
            entry["service"] = target
        pct = percent(m.get("percentage", 100), res, mpath, ctx)
        if pct is None:
            continue
        if pct != 100:
            entry["percent"] = pct
        rule.setdefault("mirror", []).append(entry)
    if http.get("rewrite"):
        _rewrite(res, path + ("rewrite",), http["rewrite"], http, rule, ctx)
    for side in ("request", "response"):
        changes = (http.get("headers") or {}).get(side)
        if changes:
            rule[f"{side}_headers"] = {k: (dict(changes[k]) if k != "remove" else list(changes[k]))
                                       for k in ("set", "add", "remove") if changes.get(k)}
    if http.get("corsPolicy"):
        rule["cors"] = _cors(res, path + ("corsPolicy",), http["corsPolicy"], ctx)
    matches = http.get("match") or [None]
    out = []
    for j, m in enumerate(matches):
        one = dict(rule)
        if m:
            before = len(ctx.problems)
            match = _match(res, path + ("match", j), m, service, ctx)
            if len(ctx.problems) > before:  # without one of its conditions the match would take more requests
                ctx.refuse(res, path + ("match", j), "this match is left out as a whole (a condition of it is not "
                           "imported)")
                continue
            if match:
                one = {"match": match, **rule}
        out.append(one)
    return out


def _default_version(service: str, ctx: Context) -> str:
    wl = ctx.workloads.get(service)
    versions = (wl.service.get("versions") if wl else None) or {}
    return next(iter(versions), "default")


def _destinations(res: Resource, path: tuple, routes: list, service: str, ctx: Context) -> dict | None:
    to: dict = {}
    for i, r in enumerate(routes):
        dest = r.get("destination") or {}
        target = ctx.resolve(str(dest.get("host", "")), res.namespace)
        if target != service:
            ctx.refuse(res, path + (i, "destination", "host"), f"{dest.get('host')}: a meshc Route forwards to its own "
                       f"service ({service}) only")
            return None
        if "port" in dest:
            ctx.note(res, path + (i, "destination", "port"), "ignored: meshc Services have one port")
        version = str(dest.get("subset") or _default_version(service, ctx))
        if not dest.get("subset") and version != "default":
            ctx.note(res, path + (i, "destination"), f"no subset: sent to {version}, the default version (Istio "
                     "spreads over every pod)")
        weight = r.get("weight", 100 if len(routes) == 1 else 0)
        to[version] = to.get(version, 0) + (int(weight) if float(weight).is_integer() else float(weight))
        for side in ("request", "response"):
            if (r.get("headers") or {}).get(side):
                ctx.refuse(res, path + (i, "headers"), "header changes per destination: meshc changes them per rule")
    return to


def _match(res: Resource, path: tuple, m: dict, service: str, ctx: Context) -> dict:
    out: dict = {}
    if any(key in m for key in callers.KEYS):
        callers.defer(res, path, m, out, service, ctx)
    for key, why in _MATCH_UNSUPPORTED.items():
        if key in m:
            ctx.refuse(res, path + (key,), why)
    if m.get("ignoreUriCase"):
        ctx.refuse(res, path + ("ignoreUriCase",), "meshc compares paths case-sensitively")
    if "uri" in m:
        kind, value = next(iter(m["uri"].items()))
        out["path"] = {kind: value}
    if "method" in m:
        kind, value = next(iter(m["method"].items()))
        if kind == "exact":
            out["methods"] = [str(value)]
        else:
            ctx.refuse(res, path + ("method",), f"a method by {kind}: meshc lists methods exactly")
    for key, target in (("headers", "headers"), ("queryParams", "query")):
        for name, cond in (m.get(key) or {}).items():
            kind, value = next(iter(cond.items()))
            entry = {"name": name.lower() if key == "headers" else name}
            if kind == "regex" and value == ".*" and key == "queryParams":
                entry["present"] = True
            else:
                entry[kind] = value
            out.setdefault(target, []).append(entry)
    return out


def _retries(res: Resource, path: tuple, r: dict, rule: dict, ctx: Context) -> None:
    attempts = int(r.get("attempts", 0))
    if attempts == 0:
        return
    out: dict = {"attempts": attempts}
    if "perTryTimeout" in r:
        out["per_try_timeout"] = duration(r["perTryTimeout"], res, path + ("perTryTimeout",), ctx)
    if r.get("retryOn"):
        on: list = []
        codes = []
        for cond in str(r["retryOn"]).split(","):
            cond = cond.strip()
            if cond.isdigit():
                codes.append(int(cond))
            elif cond in RETRY_ON:
                on.append(cond)
            else:
                ctx.refuse(res, path + ("retryOn",), f"retry condition {cond}: meshc retries on "
                           f"{', '.join(RETRY_ON)} and status codes")
        if codes:
            on.append({"retriable-status-codes": codes})
        if on:
            out["on"] = on
    out["non_idempotent"] = True  # Envoy under Istio retries every method
    if r.get("retryRemoteLocalities"):
        ctx.refuse(res, path + ("retryRemoteLocalities",), "meshc has no localities")
    rule["retries"] = out


def _fault(res: Resource, path: tuple, f: dict, rule: dict, ctx: Context) -> None:
    out: dict = {}
    if "delay" in f:
        d = f["delay"]
        if "exponentialDelay" in d:
            ctx.refuse(res, path + ("delay", "exponentialDelay"), "meshc delays are fixed")
        fixed = duration(d.get("fixedDelay", "0s"), res, path + ("delay", "fixedDelay"), ctx)
        pct = percent(d.get("percentage", d.get("percent", 100)), res, path + ("delay", "percentage"), ctx)
        if fixed and pct is not None:
            out["delay"] = {"fixed": fixed} | ({"percent": pct} if pct != 100 else {})
    if "abort" in f:
        a = f["abort"]
        pct = percent(a.get("percentage", a.get("percent", 100)), res, path + ("abort", "percentage"), ctx)
        abort: dict = {}
        if "httpStatus" in a:
            abort["status"] = int(a["httpStatus"])
        elif "grpcStatus" in a:
            code = a["grpcStatus"]
            abort["grpc_status"] = int(code) if str(code).isdigit() else GRPC_CODES.get(str(code).upper(), 2)
        else:
            ctx.refuse(res, path + ("abort",), "an abort without httpStatus or grpcStatus (http2Error: meshc has none)")
        if abort and pct is not None:
            out["abort"] = abort | ({"percent": pct} if pct != 100 else {})
    if out:
        rule["fault"] = out


def _rewrite(res: Resource, path: tuple, rw: dict, http: dict, rule: dict, ctx: Context) -> None:
    out: dict = {}
    if "uri" in rw:
        prefixes = [(m or {}).get("uri", {}).get("prefix") for m in http.get("match") or [{}]]
        if all(prefixes):
            out["prefix"] = rw["uri"]
        else:
            exacts = [(m or {}).get("uri", {}).get("exact") for m in http.get("match") or [{}]]
            if all(exacts):
                out["regex"] = {"pattern": "^.*$", "substitution": rw["uri"]}
            else:
                ctx.refuse(res, path + ("uri",), "a uri rewrite needs every match of the rule to be a uri prefix "
                           "(or exact)")
    if "uriRegexRewrite" in rw:
        out["regex"] = {"pattern": rw["uriRegexRewrite"].get("match"),
                        "substitution": re.sub(r"\\(\d)", r"\\\1", str(rw["uriRegexRewrite"].get("rewrite")))}
    if "authority" in rw:
        out["host"] = rw["authority"]
    if out:
        rule["rewrite"] = out


def _redirect(res: Resource, path: tuple, r: dict, ctx: Context) -> dict:
    out: dict = {}
    if "scheme" in r:
        out["scheme"] = str(r["scheme"]).lower()
    if "authority" in r:
        out["host"] = r["authority"]
    if "port" in r:
        out["port"] = int(r["port"])
    if "derivePort" in r:
        ctx.refuse(res, path + ("derivePort",), "meshc keeps the request's port unless `port` is given")
    if "uri" in r:
        out["path"] = r["uri"]
    if "redirectCode" in r:
        out["code"] = int(r["redirectCode"])
    return out


def _cors(res: Resource, path: tuple, c: dict, ctx: Context) -> dict:
    origins = []
    for i, o in enumerate(c.get("allowOrigins") or []):
        kind, value = next(iter(o.items())) if isinstance(o, dict) else ("exact", o)
        if kind == "exact":
            origins.append(value)
        elif kind == "regex":
            origins.append(f"regex:{value}")
        else:
            origins.append(f"regex:{re.escape(value)}.*")
    for i, o in enumerate(c.get("allowOrigin") or []):
        origins.append(o)
    out: dict = {"allow_origins": origins}
    for key, target in (("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers"),
                        ("exposeHeaders", "expose_headers")):
        if c.get(key):
            values = [str(v) for v in c[key]]
            out[target] = values if key == "allowMethods" else [v.lower() for v in values]
    if "maxAge" in c:
        out["max_age"] = duration(c["maxAge"], res, path + ("maxAge",), ctx)
    if c.get("allowCredentials"):
        out["allow_credentials"] = True
    return out
