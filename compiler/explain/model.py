"""What `meshc explain` takes and answers: a request, the steps it goes through, and the outcome.

The API (stable; other tools and the explain-versus-Envoy test code against it):

    from compiler.explain import Request, explain
    e = explain(ir, Request("productpage", "reviews", "GET", "/reviews/1", (("end-user", "jason"),)))
    e.outcome.kind      # "forwarded" | "response" | "unreachable"
    e.outcome.status    # the status the caller's app gets when a sidecar answers; None when forwarded
    e.outcome.versions  # ((version, probability), ...) where a forwarded request can land
    e.outcome.certain   # False when a percentage, a counter or the caller pod's version (not given) decides
    e.steps             # (Step, ...): side, what, decision, source, data
    e.to_json()         # a dict with stable keys
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Side = Literal["caller", "edge", "callee"]
Kind = Literal["forwarded", "response", "unreachable"]


@dataclass(frozen=True)
class Request:
    """One request as the caller's app (or an outside client, when `caller` is a Gateway) sends it.

    `path` may hold `?query`; header names are lowercase. A service caller sends `Host: <service>` unless a
    `host` header says otherwise. For a gateway caller `service` is optional (the gateway's routes decide)
    and `listener` names the gateway listener (default: its first listener that routes). `caller_version`: the
    version of the calling pod, for route rules limited to some versions of their callers (`match.callers`,
    in pods: each pod's sidecar matches its own `version` label); None: such a rule is reported as depending
    on it, and the rules after it are followed."""

    caller: str
    service: str | None = None
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    listener: str | None = None
    caller_version: str | None = None

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ",".join(values) if values else None


@dataclass(frozen=True)
class Step:
    """One decision. `source`: the IR node's policy place (`file:line` and anchor), None for built-in behaviour."""

    side: Side
    what: str
    decision: str
    source: str | None = None
    data: dict = field(default_factory=dict, compare=False)
    sidecar: str = ""  # whose sidecar decided: the caller, the gateway, the callee

    def to_json(self) -> dict:
        return {"side": self.side, "sidecar": self.sidecar, "what": self.what, "decision": self.decision,
                "source": self.source, "data": self.data}


@dataclass(frozen=True)
class Alternative:
    """Another answer the same request can get, and how likely (percent; None when it depends on traffic)."""

    status: int
    percent: float | None
    why: str

    def to_json(self) -> dict:
        return {"status": self.status, "percent": self.percent, "why": self.why}


@dataclass(frozen=True)
class Outcome:
    """`status`: what the caller's app receives from a sidecar (403, 404, 401, 301, 429, 502, 503, 400, a direct
    response's); None when forwarded (the app answers). `unreachable` (no connection: mTLS mismatch, no
    route to the service) carries the 503 the caller's sidecar answers. `versions`: where a forwarded request
    lands, with probabilities summing to 1. `alternatives`: answers a percentage or a counter may give instead."""

    kind: Kind
    status: int | None = None
    versions: tuple[tuple[str, float], ...] = ()
    certain: bool = True
    service: str | None = None
    external: bool = False
    alternatives: tuple[Alternative, ...] = ()
    summary: str = ""

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "status": self.status,
            "service": self.service,
            "external": self.external,
            "versions": [{"version": v, "probability": round(p, 6)} for v, p in self.versions],
            "certain": self.certain,
            "alternatives": [a.to_json() for a in self.alternatives],
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Explanation:
    request: Request
    steps: tuple[Step, ...]
    outcome: Outcome

    def to_json(self) -> dict:
        r = self.request
        return {
            "request": {
                "caller": r.caller,
                "service": r.service,
                "method": r.method,
                "path": r.path,
                "headers": [[n, v] for n, v in r.headers],
                "listener": r.listener,
                "caller_version": r.caller_version,
            },
            "steps": [s.to_json() for s in self.steps],
            "outcome": self.outcome.to_json(),
        }


class ExplainError(Exception):
    """The request cannot be followed (unknown caller or service, a caller that does not call it): a message for
    the user, with what it would need."""
