"""JSON Schema of the policy language's value types and of the checks pydantic cannot describe.

Durations, endpoints and IP addresses are text parsed once at load time (compiler/policy/types.py): here
they are strings with a pattern and a description. Checks written as validators (`AfterValidator`) are
invisible to a JSON Schema; those with a simple equivalent (a pattern, a minimum length) get it here, keyed
by the validator function; the others only add a sentence to the description (RE2 syntax, byte limits),
and meshc itself remains the judge.

Patterns are ECMAScript regular expressions (JSON Schema's dialect) that Python's `re` reads the same way:
`[0-9]`, not `\\d`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from compiler.policy import kubernetes, match, observability, regex, traffic, types
from compiler.policy.types import MAX_DURATION_MS, Duration, Endpoint

_UNITS = "(ms|s|m|h)"
DURATION = {
    "type": "string",
    "pattern": rf"^\s*[0-9]+{_UNITS}\s*$",
    "patternErrorMessage": "Expected a duration: a whole number with a unit, e.g. 250ms, 2s, 1m, 1h.",
    "description": "A duration: a whole number with a unit, `250ms`, `2s`, `1m` or `1h` (at most "
    f"{MAX_DURATION_MS // 1000}s, Envoy's limit).",
}
POSITIVE_DURATION = rf"^\s*0*[1-9][0-9]*{_UNITS}\s*$"
"""A duration longer than 0."""

_PORT = r"0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_DNS_OR_IPV4 = r"[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?"
ENDPOINT = {
    "type": "string",
    "pattern": rf"^(\[[0-9A-Fa-f:.]+\]|{_DNS_OR_IPV4}):{_PORT}$",
    "patternErrorMessage": "Expected host:port, e.g. 127.0.0.1:8080 or [::1]:8080 (port 1-65535).",
    "description": "`host:port` of one instance: an IP address (IPv6 in brackets, `[::1]:8080`) or a DNS name, "
    "and a port 1-65535.",
}
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IP_ADDRESS = {
    "type": "string",
    "pattern": rf"^(({_OCTET}\.){{3}}{_OCTET}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[^%/]+)?)$",
    "patternErrorMessage": "Expected an IP address, e.g. 127.0.0.2 or ::1.",
    "description": "An IPv4 (`127.0.0.2`) or IPv6 (`::1`) address.",
}
_END = r"(?![\s\S])"
"""The end of the text, in ECMAScript and Python alike (Python's `$` also matches before a final newline)."""
NO_NUL_CR_LF = rf"^[^\u0000\r\n]*{_END}"


def value_type(tp: Any) -> dict | None:
    """The schema of a value type of the language (Duration, Endpoint, IPAddress's marker), else None."""
    if tp is Duration:
        return dict(DURATION)
    if tp is Endpoint:
        return dict(ENDPOINT)
    if tp is types._IP:
        return dict(IP_ADDRESS)
    return None


# validator function -> what a JSON Schema can say about it ("description" only when the field has none)
_VALIDATORS: dict[Callable, dict] = {
    types._one_line: {"pattern": NO_NUL_CR_LF, "patternErrorMessage": "Cannot hold NUL, CR or LF (Envoy refuses them)."},
    types._not_empty: {"minLength": 1},
    types._positive: {"pattern": POSITIVE_DURATION, "patternErrorMessage": "Expected a duration longer than 0, e.g. 250ms.",
                      "description": "A duration longer than 0 (Envoy refuses 0)."},
    match._header_value: {"pattern": NO_NUL_CR_LF, "patternErrorMessage": "A header value cannot hold NUL, CR or LF."},
    match._changeable: {"pattern": "^(?!:|host$)", "patternErrorMessage": "Envoy refuses to change host and :-prefixed "
                        "headers (use rewrite.host for the Host)."},
    traffic._request_path: {"pattern": rf"^[^\u0000-\u0008\u000a-\u001f\u007f]*{_END}",
                            "patternErrorMessage": "A path cannot hold control characters (but tab)."},
    traffic._whole_seconds: {"pattern": r"^\s*0*[1-9][0-9]*((s|m|h)|000ms)\s*$",
                             "patternErrorMessage": "Expected a whole number of seconds, at least 1s, e.g. 60s.",
                             "description": "A whole number of seconds, at least 1s (Envoy counts keepalive in seconds)."},
    observability._not_empty: {"minLength": 1},
    regex.check_regex: {
        "description": "A regular expression in RE2 syntax (Envoy's), matching the whole value; meshc checks it "
        "with RE2 itself, within Envoy's program-size limit."
    },
}


def validator_hint(func: Callable) -> dict:
    """What a JSON Schema can say about an `AfterValidator` function of the policy models."""
    hint = _VALIDATORS.get(func)
    if hint is not None:
        return dict(hint)
    made_by = func.__qualname__.split(".<locals>.")[0]
    if made_by not in ("duration_at_least", "duration_at_most", "_text"):
        return {}
    seen = inspect.getclosurevars(func).nonlocals
    if made_by == "duration_at_least":
        floor = Duration(seen["floor_ms"])
        out = {"description": f"A duration of at least {floor}: {seen['why']}."}
        if floor.ms > 0:
            out["pattern"] = POSITIVE_DURATION
        return out
    if made_by == "duration_at_most":
        return {"description": f"A duration of at most {Duration(seen['limit_ms'])}: {seen['why']}."}
    assert func.__module__ == kubernetes.__name__, func  # kubernetes._text: a pattern, and what it means
    return {"pattern": seen["compiled"].pattern, "description": f"Text that must be {seen['what']}."}
