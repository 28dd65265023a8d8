"""The call graph: cycles are legal but usually a mistake (retries multiply around a loop).

One warning per strongly connected group of services (Tarjan's algorithm,
iterative: call chains can be thousands of services deep).
"""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic, Severity
from compiler.policy.resolved import Resolved


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Groups of nodes that all reach each other (size > 1), each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def check_call_cycles(view: Resolved) -> Iterator[Diagnostic]:
    services = view.services
    graph = {name: sorted(d for d in svc.calls if d in services and d != name) for name, svc in services.items()}
    for group in strongly_connected(graph):
        first = services[group[0]]
        shown = ", ".join(group[:8]) + (f" and {len(group) - 8} more" if len(group) > 8 else "")
        yield Diagnostic(
            "W201",
            f"call cycle among {len(group)} services ({shown}); retries and timeouts multiply around a loop",
            first.where("calls"),
            first.subject,
            "calls",
            severity=Severity.WARNING,
        )
