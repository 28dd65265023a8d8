"""The call graph: cycles are legal but usually a mistake (retries multiply around a loop)."""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic, Severity
from compiler.policy import PolicySet


def check_call_cycles(policy: PolicySet) -> Iterator[Diagnostic]:
    services = {s.name: s for s in policy.services}
    graph = {name: [d for d in svc.calls if d in services and d != name] for name, svc in services.items()}
    reported: set[tuple[str, ...]] = set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> Iterator[tuple[str, ...]]:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):]
                i = cycle.index(min(cycle))
                yield tuple(cycle[i:] + cycle[:i])
            elif nxt not in state:
                yield from visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            for cycle in visit(name):
                if cycle not in reported:
                    reported.add(cycle)
                    first = services[cycle[0]]
                    yield Diagnostic(
                        "W201",
                        "call cycle " + " -> ".join(cycle + (cycle[0],)) + "; retries and timeouts multiply around a loop",
                        first.where("calls"),
                        first.subject,
                        "calls",
                        severity=Severity.WARNING,
                    )
