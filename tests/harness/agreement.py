"""`meshc explain` against real Envoy: generated requests, what the sidecars did, and whether explain said so.

    case = Case("frontend", "reviews", "GET", "/items/7", (("end-user", "jason"),))
    seen = send(mesh, case)                      # through frontend's outbound listener, Host: reviews
    said = explain(ir, case.request())           # compiler.explain
    problem = disagreement(said.outcome, seen)   # None when they agree

A `Case` enters the mesh the way an app's request does: through the caller's outbound listener with
`Host: <service>` (a Service caller), or through a gateway's plain-HTTP edge listener with the `host`
header the case carries (a Gateway caller, `service` None: the gateway's routes decide). What happened is
an `Observed`: the status, and which app answered (`service/version`, from the `x-served-by` header each
app adds: `serve_identity`), or None when a sidecar answered itself (403, 401, 400, 502, a redirect, a
direct response, a fault's abort).

Agreement, per request (`disagreement`): a forwarded prediction means an app answered, of the predicted
service, with a version the prediction gives a probability above 0, and the app's own status (200 here).
Weights are probabilities: a 50/50 split accepts either version, a 100/0 split only the first (`certain`
says whether a percentage of a fault or a rate limit may change the answer; its `alternatives` say to
what). A response prediction means a sidecar answered with that status (and the Location explain names,
for a redirect) and no app did. Everything here is bounded: one request per case, the client's timeouts.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from compiler.lower.external import UNDECLARED

from .client import send_many
from .upstream import Reply, Upstream

SERVED_BY = "x-served-by"
"""The header every test app adds to its answer: `<service>/<version>` (HEAD answers have no body)."""


def serve_identity(app: Upstream) -> Upstream:
    """Make `app` say who it is in `x-served-by` on every answer (the JSON echo stays the body)."""
    app.handler = lambda req: Reply(headers={SERVED_BY: f"{app.service}/{app.version}"})
    return app


@dataclass(frozen=True)
class Case:
    """One request: who sends it (a Service or a Gateway), to which service (None: a gateway's routes decide,
    or an undeclared host: `host` then names it), method, path (may hold ?query), headers (lowercase names)."""

    caller: str
    service: str | None
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    host: str | None = None
    """The Host header when it is not the service's name (gateway virtual hosts, undeclared egress hosts)."""
    token: str = ""
    """A label of the token in `headers` (for the table): '', valid, admin, expired, wrong-iss, ..."""
    listener: str | None = None
    """A gateway's listener the request enters at (None: the caller's usual entry)."""

    @property
    def entry(self) -> str:
        """The key of `send`'s entries: the caller, or `caller/listener`."""
        return self.caller if self.listener is None else f"{self.caller}/{self.listener}"

    @property
    def host_header(self) -> str:
        return self.host or self.service or ""

    def label(self) -> str:
        heads = " ".join(f"{k}:{v}" for k, v in self.headers if k != "authorization")
        token = f" token={self.token}" if self.token else ""
        target = self.service or "-"
        path = re.sub(r"(=[A-Za-z0-9_-]{12})[A-Za-z0-9_.-]{40,}", r"\1…", self.path)  # tokens in the query
        return f"{self.entry}->{target} host={self.host_header} {self.method} {path} {heads}{token}".rstrip()


@dataclass(frozen=True)
class Observed:
    status: int
    served_by: str | None
    """`service/version` of the app that answered, None when a sidecar or the gateway answered itself."""
    note: str = ""

    @property
    def version(self) -> str | None:
        return self.served_by.split("/", 1)[1] if self.served_by else None

    @property
    def service(self) -> str | None:
        return self.served_by.split("/", 1)[0] if self.served_by else None

    def label(self) -> str:
        return f"{self.status} {self.served_by or '(proxy)'}{(' ' + self.note) if self.note else ''}"


def send(entries: dict[str, Any], case: Case, timeout: float = 5.0) -> Observed:
    """Send `case` once, into `entries[case.entry]`: (host, port) of plain HTTP (a sidecar's outbound listener or
    a gateway's edge), or a function `(case, timeout) -> Response` for other clients (HTTPS at the edge)."""
    entry = entries[case.entry]
    if callable(entry):
        r = entry(case, timeout)
    else:
        host, port = entry
        r = send_many(
            host, port, 1, case.path, method=case.method, headers=dict(case.headers), host_header=case.host_header,
            timeout=timeout, max_seconds=timeout + 1,
        )[0]
    note = r.headers.get("location", "") if 300 <= r.status < 400 else ""
    return Observed(r.status, r.headers.get(SERVED_BY), note)


# --------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------


def predicted(outcome: Any) -> str:
    """An explain Outcome in one short line (for the table)."""
    if outcome.kind == "forwarded":
        vs = ", ".join(f"{v}:{p:g}" for v, p in outcome.versions)
        target = getattr(outcome, "service", None)
        return f"forwarded {target + ' ' if target else ''}[{vs}]{'' if outcome.certain else ' (uncertain)'}"
    return f"{outcome.kind} {outcome.status}{'' if outcome.certain else ' (uncertain)'}"


def disagreement(outcome: Any, seen: Observed, service: str | None = None, location: str | None = None) -> str | None:
    """Why explain's `outcome` and what the sidecars did differ, or None when they agree.

    `service`: the service the request was for, when known (a forwarded answer must come from its app);
    `location`: the redirect's target explain names, if any (it must be the Location Envoy sent)."""
    if outcome.kind == "forwarded":
        if seen.served_by is None:
            return f"predicted forwarded, a proxy answered {seen.status}"
        want = getattr(outcome, "service", None) or service
        if want == UNDECLARED:  # the forward proxy (egress.undeclared: allow): whatever the Host names answers
            return None if seen.status == 200 else f"the app at the Host answers 200, got {seen.status}"
        if want and seen.service != want:
            return f"predicted service {want}, {seen.service} answered"
        if getattr(outcome, "external", False):  # outside the mesh: no versions, the one app answers
            return None if seen.status == 200 else f"the external app answers 200, got {seen.status}"
        possible = {v for v, p in outcome.versions if p > 0}
        if seen.version not in possible:
            return f"version {seen.version} not among the predicted {sorted(possible)}"
        if outcome.status is not None and outcome.status != seen.status:
            return f"predicted status {outcome.status}, got {seen.status}"
        if seen.status != 200:
            return f"the app answers 200, got {seen.status}"
        return None
    if seen.served_by is not None:
        return f"predicted {outcome.kind} {outcome.status}, the app {seen.served_by} answered {seen.status}"
    if outcome.status != seen.status:
        return f"predicted status {outcome.status}, got {seen.status}"
    if location is not None and location != seen.note:
        return f"predicted Location {location}, got {seen.note or 'none'}"
    return None


def redirect_location(explanation: Any) -> str | None:
    """The Location a redirect step of `explanation` names (None: no redirect, or none named)."""
    return next((s.data["location"] for s in explanation.steps if s.data.get("location")), None)


def table(rows: Sequence[tuple[Case, str, Observed, str]]) -> str:
    """Disagreeing requests: (case, prediction, observed, why), one per line, both sides side by side."""
    lines = [f"{'request':<80}  {'explain':<36}  {'envoy':<28}  why"]
    for case, said, seen, why in rows:
        lines.append(f"{case.label():<80}  {said:<36}  {seen.label():<28}  {why}")
    return "\n".join(lines)


def decision_path(explanation: Any) -> tuple:
    """The decisions that made an outcome, without the request's own values: each step's side, what and source,
    and the outcome's kind and status. Two requests with the same path took the same branches."""
    steps = tuple((s.side, s.what, s.source or "") for s in explanation.steps)
    return steps + ((explanation.outcome.kind, explanation.outcome.status),)


# --------------------------------------------------------------------------
# generating
# --------------------------------------------------------------------------


@dataclass
class Vocabulary:
    """What generated requests are made of. `targets`: (caller, service, host[, listener]) to send to;
    `headers`: name -> values to pick from; `tokens`: label -> the whole `authorization` header value."""

    targets: Sequence[tuple[str, str | None, str | None]]
    methods: Sequence[str]
    paths: Sequence[str]
    queries: Sequence[str]
    headers: dict[str, Sequence[str]]
    tokens: dict[str, str] = field(default_factory=dict)
    token_share: float = 0.5
    """The share of requests that carry a token (one of `tokens`, drawn evenly)."""
    max_headers: int = 2


def generate(vocab: Vocabulary, n: int, seed: int) -> list[Case]:
    """`n` requests drawn with a fixed seed (the same list every run), without duplicates."""
    rng = random.Random(seed)
    out: list[Case] = []
    seen: set[Case] = set()
    tries = 0
    while len(out) < n and tries < n * 20:
        tries += 1
        caller, service, host, *listener = rng.choice(list(vocab.targets))
        path = rng.choice(list(vocab.paths))
        query = rng.choice(list(vocab.queries))
        if query:
            path = f"{path}{'&' if '?' in path else '?'}{query}"
        names = rng.sample(sorted(vocab.headers), rng.randint(0, min(vocab.max_headers, len(vocab.headers))))
        headers = [(h, rng.choice(list(vocab.headers[h]))) for h in sorted(names)]
        token = rng.choice(sorted(vocab.tokens)) if vocab.tokens and rng.random() < vocab.token_share else ""
        if token:
            headers.append(("authorization", vocab.tokens[token]))
        method = rng.choice(list(vocab.methods))
        case = Case(caller, service, method, path, tuple(headers), host, token, listener[0] if listener else None)
        if case not in seen:
            seen.add(case)
            out.append(case)
    return out


def tally(counter: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))))
