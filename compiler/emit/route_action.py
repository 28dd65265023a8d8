"""What a matched route does: forward (`route`), `redirect` or `direct_response`."""

from __future__ import annotations

from compiler.emit import names
from compiler.ir import HashKey, HttpRoute, Mirror, Redirect, Retry, Target
from compiler.policy.types import is_whole, per_million

_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}


def set_headers(pairs, action: str = "OVERWRITE_IF_EXISTS_OR_ADD") -> list[dict]:
    """Headers to add with literal values. Envoy reads `%...%` in a header value as a command operator
    (and refuses a lone `%`): every `%` is written `%%`, which Envoy sends as one `%`."""
    return [{"header": {"key": k, "value": v.replace("%", "%%")}, "append_action": action} for k, v in pairs]


def fraction(percent: int | float) -> dict:
    """Envoy's FractionalPercent: a whole percentage over HUNDRED, else millionths over MILLION (0.1 -> 1000)."""
    if is_whole(percent):
        return {"numerator": int(percent), "denominator": "HUNDRED"}
    return {"numerator": per_million(percent), "denominator": "MILLION"}


def weights(targets: tuple[Target, ...]) -> list[int]:
    """Envoy's integer weights of a split: the percentages themselves when all are whole, else every one in
    millionths (99.9 / 0.1 -> 999000 / 1000; they add up to 1,000,000)."""
    if all(is_whole(t.weight) for t in targets):
        return [int(t.weight) for t in targets]
    return [per_million(t.weight) for t in targets]


def _percent(value: int | float) -> dict:
    return {"default_value": fraction(value)}


def _mirror(m: Mirror) -> dict:
    out = {"cluster": names.cluster(m.cluster), "runtime_fraction": _percent(m.percent)}
    if m.set_headers:
        out["request_headers_mutations"] = [{"append": h} for h in set_headers(m.set_headers)]
    return out


def _retry(r: Retry) -> dict:
    out = {
        "retry_on": ",".join(r.conditions),
        "num_retries": r.attempts,
        # Each retry goes to a host not tried yet for this request, when there is one.
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
        "retry_back_off": {"base_interval": r.backoff_base.proto(), "max_interval": r.backoff_max.proto()},
    }
    if r.per_try_timeout is not None:
        out["per_try_timeout"] = r.per_try_timeout.proto()
    if r.status_codes:
        out["retriable_status_codes"] = list(r.status_codes)
    return out


def _hash_policy(k: HashKey) -> dict:
    if k.kind == "header":
        return {"header": {"header_name": k.name}}
    if k.kind == "cookie":
        cookie = {"name": k.name}
        if k.ttl is not None:
            cookie["ttl"] = k.ttl.proto()
        return {"cookie": cookie}
    return {"connection_properties": {"source_ip": True}}


def forward(r: HttpRoute) -> dict:
    if len(r.targets) == 1 and not r.targets[0].set_headers:
        action: dict = {"cluster": names.cluster(r.targets[0].cluster)}
    else:
        clusters = []
        for t, weight in zip(r.targets, weights(r.targets)):
            entry = {"name": names.cluster(t.cluster), "weight": weight}
            if t.set_headers:
                entry["request_headers_to_add"] = set_headers(t.set_headers)
            clusters.append(entry)
        action = {"weighted_clusters": {"clusters": clusters}}
    if r.hash_key is not None:
        action["hash_policy"] = [_hash_policy(r.hash_key)]
    if r.timeout is not None:
        action["timeout"] = r.timeout.proto()
    if r.idle_timeout is not None:
        action["idle_timeout"] = r.idle_timeout.proto()
    if r.retry is not None:
        action["retry_policy"] = _retry(r.retry)
    if r.mirrors:
        action["request_mirror_policies"] = [_mirror(m) for m in r.mirrors]
    if r.websocket:
        # Per route: an upgrade to a service that did not ask for it gets Envoy's 403.
        action["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    if r.rewrite is not None:
        if r.rewrite.prefix is not None:
            action["prefix_rewrite"] = r.rewrite.prefix
        if r.rewrite.regex is not None:
            pattern, substitution = r.rewrite.regex
            action["regex_rewrite"] = {"pattern": {"regex": pattern}, "substitution": substitution}
        if r.rewrite.host is not None:
            action["host_rewrite_literal"] = r.rewrite.host
    return action


def redirect(r: Redirect) -> dict:
    out: dict = {}
    if r.scheme is not None:
        out["scheme_redirect"] = r.scheme
    if r.host is not None:
        out["host_redirect"] = r.host
    if r.port is not None:
        out["port_redirect"] = r.port
    if r.path is not None:
        out["path_redirect"] = r.path
    if r.prefix is not None:
        out["prefix_rewrite"] = r.prefix
    out["response_code"] = _REDIRECT_CODES[r.code]
    return out


def action(r: HttpRoute) -> tuple[str, dict]:
    """(field name, value) of the route's action."""
    if r.redirect is not None:
        return "redirect", redirect(r.redirect)
    if r.respond is not None:
        body = {"body": {"inline_string": r.respond.body}} if r.respond.body else {}
        return "direct_response", {"status": r.respond.status, **body}
    return "route", forward(r)
