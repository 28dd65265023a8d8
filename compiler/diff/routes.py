"""Route rules compared by what they match, not by their index.

A rule's identity is its match, written the way a reviewer reads it (`[GET prefix /api, header
end-user=jason]`, `[any request]`). Rules present on both sides are compared field by field (the weights
go to the `traffic` section, everything else to `routes`); a rule whose relative order among the common
rules changed is `moved`; leftover rules at the same position on both sides are one rule whose match
changed; the others are added or removed. A service without a Route has one implicit rule, `[any
request]` to its default version, so a default-version change shows as traffic moving.
"""

from __future__ import annotations

from compiler.diff.model import Change, nested_changes, plain
from compiler.policy.resolved import Resolved
from compiler.policy.route import Match, RouteRule

ANY_REQUEST = "any request"


def _string_match(name: str, m) -> str:
    if getattr(m, "present", None) is not None:
        return f"{name} present" if m.present else f"{name} absent"
    if getattr(m, "exact", None) is not None:
        return f"{name}={m.exact}"
    if getattr(m, "prefix", None) is not None:
        return f"{name}^={m.prefix}"
    return f"{name}~{m.regex}"


def callers_text(callers) -> str:
    """A rule's callers as a reviewer reads them: `reviews v3`, `ingress or reviews v2/v3` (sorted), or
    `every caller` for none (the rule applies on every caller's sidecar)."""
    if not callers:
        return "every caller"
    texts = {c.service + (f" {'/'.join(sorted(c.versions))}" if c.versions else "") for c in callers}
    return " or ".join(sorted(texts))


def match_label(match: Match) -> str:
    """The rule's identity: every condition of its match, in a fixed order, or `any request`; then the
    callers it is limited to (`any request from reviews v3`)."""
    label = _conditions_label(match)
    return f"{label} from {callers_text(match.callers)}" if match.callers else label


def _conditions_label(match: Match) -> str:
    """What the match asks of the request itself (not of its caller)."""
    parts = []
    if match.methods:
        parts.append("|".join(sorted(set(match.methods))))
    path = match.path
    if path.prefix is not None and path.prefix != "/":
        parts.append(f"prefix {path.prefix}")
    elif path.exact is not None:
        parts.append(f"path {path.exact}")
    elif path.regex is not None:
        parts.append(f"path ~{path.regex}")
    parts += sorted(f"header {_string_match(h.name, h)}" for h in match.headers)
    parts += sorted(f"cookie {_string_match(c.name, c)}" for c in match.cookies)
    parts += sorted(f"query {_string_match(q.name, q)}" for q in match.query)
    return ", ".join(parts) or ANY_REQUEST


def rule_labels(rules: list[RouteRule]) -> list[str]:
    """`[match]` per rule; a second rule with the same match (never reached) gets ` #2`."""
    seen: dict[str, int] = {}
    out = []
    for rule in rules:
        label = match_label(rule.match)
        seen[label] = seen.get(label, 0) + 1
        out.append(f"[{label}]" if seen[label] == 1 else f"[{label}] #{seen[label]}")
    return out


def _effective_rules(view: Resolved, name: str) -> tuple[list[RouteRule], dict]:
    """The rules callers apply toward `name` (a Service or an ExternalService), and the Route's own settings."""
    target = view.views.get(name) or view.externals.get(name)
    route = target.route
    if route is None:
        return [RouteRule(to={target.default_version: 100})], {}
    return list(route.rules), {"retry_budget": plain(route.retry_budget)}


def rule_content(view: Resolved, rule: RouteRule) -> dict:
    """What a rule does, as plain values, with its effective timeout (the Mesh's default when it has none)."""
    data = plain(rule)
    data.pop("match")
    data = {k: v for k, v in data.items() if v not in (None, [], {})}
    if rule.to is not None:
        timeout = view.timeout_of(rule)
        data["timeout"] = str(timeout) if timeout is not None else None
    return data


def _action(content: dict) -> str:
    if "to" in content:
        return "forward " + weights_text(content["to"])
    kind = "redirect" if "redirect" in content else "respond"
    return f"{kind} " + ", ".join(f"{k}={v}" for k, v in content[kind].items() if v not in (None, ""))


def weights_text(to: dict | None) -> str:
    if not to:
        return "nothing"
    return ", ".join(f"{v} {w}%" for v, w in to.items())


def _order_moved(old_keys: list[str], new_keys: list[str]) -> set[str]:
    """The common rules that are not in the longest sequence keeping its order on both sides."""
    common_new = [k for k in new_keys if k in old_keys]
    pos = {k: i for i, k in enumerate(k for k in old_keys if k in new_keys)}
    seq = [pos[k] for k in common_new]
    # longest increasing subsequence of old positions, in new order
    best: list[list[int]] = []
    for i, p in enumerate(seq):
        prev = max((b for b in best if seq[b[-1]] < p), key=len, default=[])
        best.append(prev + [i])
    keep = max(best, key=len, default=[])
    kept = {common_new[i] for i in keep}
    return {k for k in common_new if k not in kept}


def route_changes(old: Resolved, new: Resolved) -> list[Change]:
    """Traffic and route-rule changes of every service and external service present on both sides."""
    out: list[Change] = []
    names = sorted((set(old.views) | set(old.externals)) & (set(new.views) | set(new.externals)))
    for name in names:
        old_rules, old_route = _effective_rules(old, name)
        new_rules, new_route = _effective_rules(new, name)
        out += _compare_rules(name, old, new, old_rules, new_rules)
        for path, a, b in nested_changes(old_route, new_route):
            out.append(Change("routes", name, path, "changed", a, b))
    for name in sorted((set(new.views) | set(new.externals)) - (set(old.views) | set(old.externals))):
        rules, _ = _effective_rules(new, name)
        if (new.views.get(name) or new.externals.get(name)).route is not None:
            for i, (label, rule) in enumerate(zip(rule_labels(rules), rules)):
                out.append(Change("routes", name, f"rule {label}", "added", None, f"#{i + 1}: {_action(rule_content(new, rule))}"))
    return out


def _compare_rules(name: str, old: Resolved, new: Resolved, old_rules, new_rules) -> list[Change]:
    old_keys, new_keys = rule_labels(old_rules), rule_labels(new_rules)
    old_by = {k: (i, r) for i, (k, r) in enumerate(zip(old_keys, old_rules))}
    new_by = {k: (i, r) for i, (k, r) in enumerate(zip(new_keys, new_rules))}
    removed = [k for k in old_keys if k not in new_by]
    added = [k for k in new_keys if k not in old_by]
    # A rule whose match changed: the same position on both sides, among the unmatched ones.
    renamed = {}
    for k in added:
        i = new_by[k][0]
        if i < len(old_keys) and old_keys[i] in removed and old_keys[i] not in renamed.values():
            renamed[k] = old_keys[i]
    out: list[Change] = []
    for k in removed:
        if k in renamed.values():
            continue
        i, rule = old_by[k]
        out.append(Change("routes", name, f"rule {k}", "removed", f"#{i + 1}: {_action(rule_content(old, rule))}"))
    moved = _order_moved(old_keys, new_keys)
    for k in new_keys:
        j, rule = new_by[k]
        after = rule_content(new, rule)
        if k in renamed:
            i, old_rule = old_by[renamed[k]]
            out.append(_match_changed(name, j, old_rule.match, rule.match, renamed[k], k))
            before, label = rule_content(old, old_rule), f"rule {k}"
        elif k in old_by:
            i, old_rule = old_by[k]
            before, label = rule_content(old, old_rule), f"rule {k}"
            if k in moved:
                out.append(Change("routes", name, f"rule {k}: position", "moved", f"#{i + 1}", f"#{j + 1}"))
        else:
            out.append(Change("routes", name, f"rule {k}", "added", None, f"#{j + 1}: {_action(after)}"))
            continue
        if before.get("to") != after.get("to"):
            out.append(Change("traffic", name, label, "changed", before.get("to"), after.get("to")))
        rest_before = {x: v for x, v in before.items() if x != "to"}
        rest_after = {x: v for x, v in after.items() if x != "to"}
        for path, a, b in nested_changes(rest_before, rest_after):
            out.append(Change("routes", name, f"{label}: {path}", "changed", a, b))
    return out


def _match_changed(name: str, j: int, old: Match, new: Match, old_key: str, new_key: str) -> Change:
    """A rule at the same position whose match changed. Only its callers: said in words (`rule #1 [any
    request]: callers: every caller -> only reviews v3`), since the other callers' sidecars lose or gain it."""
    if _conditions_label(old) == _conditions_label(new):
        def only(m: Match) -> str:
            return "only " + callers_text(m.callers) if m.callers else callers_text(m.callers)

        return Change("routes", name, f"rule #{j + 1} [{_conditions_label(new)}]: callers", "changed", only(old), only(new))
    return Change("routes", name, f"rule #{j + 1}: match", "changed", old_key, new_key)
