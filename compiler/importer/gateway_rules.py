"""The http rules of a VirtualService bound to gateways only -> rules of the destination service's Route with
`match.callers: [<gateway>]`.

Istio applies at a gateway only the VirtualServices bound to it, never the `mesh` ones; its sidecars never
apply a gateway-bound VirtualService. meshc has one Route per service, applied by every caller's proxy (a
Gateway is a caller): so the gateway's rules go first, each for that Gateway only, then (unless they end with
a rule that takes every request) a 404 for the rest of that Gateway's requests, then the service's mesh
rules. A service with no mesh Route gets a last rule that sends every other caller to its default version,
as before the import (a Route whose rules match no request answers 404).

The Gateway's own routes (host, path prefix -> service) are written by edge.gateway_routes.
"""

from __future__ import annotations

from compiler.importer import callers
from compiler.importer.model import Context, Doc, name_of
from compiler.importer.read import Resource

_BY_SOURCE = ("sourceLabels", "sourceNamespace")


def collect(res: Resource, carried: list[tuple[str, int, str, dict]], ctx: Context) -> None:
    """Convert each carried http rule (edge.gateway_routes) with the mesh import's converter; kept per service
    until every VirtualService is read (`merge`)."""
    from compiler.importer.routes import _http_rule

    for g, i, service, http in carried:
        gateway = name_of(g.split("/")[-1])
        path = ("spec", "http", i)
        if service not in ctx.workloads:
            _refuse_beyond_routing(res, path, http, ctx)
            continue
        if any(key in (m or {}) for m in http.get("match") or [] for key in _BY_SOURCE):
            ctx.refuse(res, path + ("match",), "sourceLabels or sourceNamespace in a VirtualService bound to gateways "
                       "only: the caller is the gateway (the rule is left out)")
            continue
        groups = ctx.gateway_rules.setdefault(service, [])
        other = next((grp for grp in groups if grp[0] == gateway and grp[1] is not res), None)
        if other is not None:
            ctx.refuse(res, path, f"VirtualService {other[1].name} also routes {service} at Gateway {gateway}: "
                       "meshc Route rules do not see the host (merge the two VirtualServices)")
            continue
        rules = []
        for rule in _http_rule(res, path, http, service, ctx):
            match = {"callers": [gateway], **(rule.pop("match", None) or {})}
            rules.append({"match": match, **rule})
        group = next((grp for grp in groups if grp[0] == gateway and grp[1] is res), None)
        if group is None:
            groups.append((gateway, res, rules))
        else:
            group[2].extend(rules)


def _refuse_beyond_routing(res: Resource, path: tuple, http: dict, ctx: Context) -> None:
    """An ExternalService behind a gateway: only the Gateway route (host, path -> it) is carried, as before."""
    if any((d.get("destination") or {}).get("subset") for d in http.get("route") or []):
        ctx.refuse(res, path + ("route",), "subsets of an ExternalService at the gateway: not carried over")
    for key in sorted(set(http) - {"match", "route", "name"}):
        ctx.refuse(res, path + (key,), "a gateway route to an ExternalService only chooses it")
    for j, m in enumerate(http.get("match") or []):
        for key in sorted(set(m or {}) - {"uri", "gateways"}):
            ctx.refuse(res, path + ("match", j, key), "a gateway route to an ExternalService matches host and "
                       "path only")


def _takes_every_request(rule: dict) -> bool:
    match = dict(rule.get("match") or {})
    match.pop("callers", None)
    return not match or match == {"path": {"prefix": "/"}}


def merge(ctx: Context) -> None:
    """Put each service's gateway rules before its mesh rules (once every VirtualService is read)."""
    from compiler.importer.routes import _default_version

    for service, groups in ctx.gateway_rules.items():
        groups = [grp for grp in groups if grp[2]]
        if not groups:
            continue
        route = callers._route_of(ctx, service)
        comments: list[str] = []
        if route is None:
            version = _default_version(service, ctx)
            mesh_rules: list[dict] = [{"to": {version: 100}}]
            # a gateway's rule that sends every request to the default version is what a service without a Route does
            groups = [grp for grp in groups if grp[2] != [{"match": {"callers": [grp[0]]}, **mesh_rules[0]}]]
            if not groups:
                continue
        else:
            mesh_rules = route.body["rules"]
        rules: list[dict] = []
        for gateway, res, own in groups:
            first = len(rules) + 1
            rules.extend(own)
            which = f"rule {first}" if first == len(rules) else f"rules {first}-{len(rules)}"
            comments.append(f"{which}: from VirtualService {res.name} ({res.where()}), bound to "
                            f"Gateway {gateway} only: for requests through it (callers: [{gateway}])")
            if not _takes_every_request(own[-1]):
                # Istio applies no mesh VirtualService at a gateway: the rest of its requests are not sent on to the
                # rules below (Istio answers 404: no route)
                rules.append({"match": {"callers": [gateway]}, "respond": {"status": 404}})
                comments.append(f"rule {len(rules)}: 404 for the other requests through Gateway {gateway}: Istio "
                                "applies only the VirtualServices bound to a gateway there, never the mesh rules below")
        if route is None:
            comments.append(f"rule {len(rules) + 1}: every other caller goes to {version}, as without a Route (the "
                            "rules above are for Gateways only)")
            ctx.add(service, Doc(f"{service}.yaml", {"kind": "Route", "service": service, "rules": rules + mesh_rules},
                                 comments))
        else:
            comments.append(f"rule {len(rules) + 1} on: the mesh VirtualService's rules (the next comment)")
            route.body["rules"] = rules + mesh_rules
            route.comments[:0] = comments
