"""The running state of one explained request: the steps so far and the request as the next sidecar sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.diagnostics import Source
from compiler.explain.model import Alternative, Side, Step


def where(source: Source | None) -> str | None:
    """`file:line Kind/name/path`: the policy place of an IR node."""
    if source is None:
        return None
    return f"{source.file}:{source.line}" + (f" {source.anchor}" if source.anchor else "")


@dataclass
class Trace:
    method: str
    path: str  # with its query
    headers: dict[str, str]  # lowercase names; the request as the next filter sees it
    steps: list[Step] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    certain: bool = True
    sidecars: dict[str, str] = field(default_factory=dict)  # side -> the sidecar (service or gateway) on that side
    caller_version: str | None = None  # the calling pod's version (`--from-version`); None: not given
    pod_versions: tuple[str, ...] = ()  # the caller's versions in pods (each pod's sidecar knows its own)
    depends: list[str] = field(default_factory=list)  # what a caller pod of another version would get instead
    passed_versions: set[str] = field(default_factory=set)  # caller versions the rules followed past (not given)

    def step(self, side: Side, what: str, decision: str, source: Source | None = None, **data) -> None:
        data = {k: v for k, v in data.items() if v is not None}
        self.steps.append(Step(side, what, decision, where(source), data, self.sidecars.get(side, "")))

    def maybe(self, status: int, percent: float | None, why: str) -> None:
        self.alternatives.append(Alternative(status, percent, why))
        self.certain = False

    def matching_headers(self) -> dict[str, str]:
        """Headers as route and RBAC matchers see them, pseudo-headers included."""
        return {**self.headers, ":method": self.method, ":path": self.path}
