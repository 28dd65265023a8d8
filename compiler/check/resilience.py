"""Mesh-wide resilience analysis: how retries, timeouts and pools combine along call chains (W601-W604).

Each check reads the call graph (compiler/check/callgraph.py): on an edge to C the caller applies C's Route.

- W601 retry amplification: one request entering the mesh can become t1 × t2 × ... tries of a service
  deep in it (t = 1 + retries.attempts of each hop's rule that retries most). The product of the worst
  chain into each service, over the call graph without its cycles (W604 reports those), above the Mesh's
  `analysis.max_retry_amplification`; at the rule that contributes most (the outermost of equals).
- W602 timeout inversion: the callers of C give up after L (the shortest of a rule's timeout and its
  per_try_timeout), while C's own call to D may take longer: D's rule timeout, or with retries
  per_try_timeout × tries + the longest back-off Envoy may wait, whichever is shorter. Only where retries
  are involved (D's rule retries, or L is a per-try timeout): a plain longer inner timeout is common and
  wastes the inner work once.
- W603 retries vs pool: with a retry budget Envoy ignores max_retries and lets each caller's sidecar have
  max(min_concurrency, percent × max_requests) retries in flight (at most max_requests); summed over C's
  callers they may take every slot of C's pool (max_requests).
- W604 a call cycle with retries: each turn around it multiplies the load by the product of its tries.

Warnings only: whether a chain is ever taken depends on the apps, which meshc cannot see.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Iterator

from compiler.check.callgraph import CallGraph, Edge
from compiler.check.graph import strongly_connected
from compiler.diagnostics import Diagnostic, Severity, Source
from compiler.policy.resolved import Resolved, tries_of
from compiler.policy.route import RouteRule
from compiler.policy.types import Duration

INFINITE = math.inf
MAX_CYCLE_EDGES = 64
"""W604 looks for the worst cycle through at most this many retrying edges of one group (bounded work)."""


def check_resilience(view: Resolved) -> Iterator[Diagnostic]:
    if view.mesh is None:
        return
    graph = CallGraph(view)
    yield from _amplification(graph, view.mesh.analysis.max_retry_amplification)
    yield from _timeouts(graph)
    yield from _pools(graph)
    yield from _cycles(graph)


def _warn(code: str, message: str, edge_or_where, subject: str = "", path: str = "", refs=()) -> Diagnostic:
    if isinstance(edge_or_where, Edge):
        edge_or_where, subject, path = edge_or_where.where, edge_or_where.subject, edge_or_where.path
    return Diagnostic(code, message, edge_or_where, subject, path, severity=Severity.WARNING, refs=tuple(refs))


def _number(n: int) -> str:
    digits = len(str(n))
    return str(n) if digits <= 12 else f"about 10^{digits - 1}"


def _product(edges: list[Edge]) -> tuple[int, str]:
    """The product of the tries along the edges, and how a message shows it (`4 × 4 = 16`)."""
    factors = [str(e.tries) for e in edges if e.tries > 1]
    product = math.prod(e.tries for e in edges)
    if len(factors) > 8:
        factors = factors[:4] + [f"… ({len(factors) - 6} more)"] + factors[-2:]
    return product, (f"{' × '.join(factors)} = {_number(product)}" if len(factors) > 1 else _number(product))


def _path(edges: list[Edge]) -> str:
    """`a → b → c`; a long chain keeps its first and last services."""
    names = [edges[0].caller] + [e.callee for e in edges]
    if len(names) > 10:
        names = names[:5] + [f"… ({len(names) - 8} more)"] + names[-3:]
    return " → ".join(names)


def _blame(edges: list[Edge]) -> Edge:
    """The edge that makes the most tries; the first (outermost) of equals."""
    return max(edges, key=lambda e: (e.tries, -edges.index(e)))


# ---------------------------------------------------------------- W601


def _amplification(graph: CallGraph, limit: int) -> Iterator[Diagnostic]:
    adjacency = graph.adjacency()
    group_of = {n: i for i, group in enumerate(strongly_connected(adjacency)) for n in group}
    dag = {n: [e for e in edges if group_of.get(n, n) != group_of.get(e.callee, e.callee)] for n, edges in graph.out.items()}
    indegree = {n: 0 for n in dag}
    for edges in dag.values():
        for e in edges:
            indegree[e.callee] += 1
    best = {n: (1, 0) for n in dag}  # (product of tries, hops) of the worst chain into n
    pred: dict[str, Edge] = {}
    ready = [n for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    while ready:
        node = heapq.heappop(ready)
        for e in dag[node]:
            product, hops = best[node]
            candidate = (product * e.tries, hops + 1)
            if candidate > best[e.callee]:
                best[e.callee], pred[e.callee] = candidate, e
            indegree[e.callee] -= 1
            if indegree[e.callee] == 0:
                heapq.heappush(ready, e.callee)
    found: dict[Source, tuple] = {}
    for node in sorted(dag):
        product = best[node][0]
        deeper = any(pred.get(e.callee) is e and best[e.callee][0] > product for e in dag[node])
        if product <= limit or deeper:
            continue
        chain: list[Edge] = []
        at = node
        while at in pred:
            chain.insert(0, pred[at])
            at = pred[at].caller
        blamed = _blame(chain)
        key = (-product, -len(chain), " ".join(e.callee for e in chain))
        if blamed.where not in found or key < found[blamed.where][0]:
            found[blamed.where] = (key, chain, blamed)
    for _, chain, blamed in sorted(found.values(), key=lambda f: f[0]):
        product, shown = _product(chain)
        path = _path(chain)
        yield _warn(
            "W601",
            f"one request to {graph.name(chain[0].caller)} can become {shown} tries of '{chain[-1].callee}' "
            f"({path}), above the Mesh's analysis.max_retry_amplification {limit}: in an outage every layer "
            f"retries the one below; retry on one hop of the chain only, or fewer attempts here "
            f"({blamed.tries} tries on {blamed.caller} → {blamed.callee})",
            blamed,
        )


# ---------------------------------------------------------------- W602


def _ms(d: Duration | None) -> float:
    return INFINITE if d is None or d.ms == 0 else d.ms


def _text(ms: float) -> str:
    """`250ms`, `2s`, `3.1s`; `no limit` for a timeout of 0 (Envoy: none)."""
    if ms == INFINITE:
        return "no limit"
    if ms >= 1000 and ms % 1000:
        return f"{ms / 1000:g}s"
    return str(Duration(int(ms)))


def _timeout_text(rule: RouteRule | None, ms: float) -> str:
    """What says how long a rule's whole request may take: its `timeout`, or the Mesh's default."""
    if ms == INFINITE:
        return "no timeout"
    return f"timeout {_text(ms)}" if rule is not None and rule.timeout else f"the Mesh's defaults.timeout {_text(ms)}"


def _backoff_ms(rule: RouteRule, retries: int) -> int:
    """The longest Envoy may wait before `retries` retries: retry k waits less than min(base × (2^k - 1), max)."""
    b = rule.retries.backoff
    top = b.max.ms if b.max is not None else 10 * b.base.ms
    return sum(min(b.base.ms * (2**k - 1), top) for k in range(1, retries + 1))


def _limit(view: Resolved, rule: RouteRule | None) -> tuple[float, str, str]:
    """How long a caller waits for one try of the rule: (ms, what says so, the field that says so or "")."""
    timeout = view.timeout_of(rule) if rule is not None else view.mesh.defaults.timeout
    out = (_ms(timeout), _timeout_text(rule, _ms(timeout)), "timeout" if rule is not None and rule.timeout else "")
    if rule is not None and tries_of(rule) > 1 and _ms(rule.retries.per_try_timeout) < out[0]:
        per_try = rule.retries.per_try_timeout
        out = (float(per_try.ms), f"per_try_timeout {per_try}", "retries.per_try_timeout")
    return out


def _takes(view: Resolved, rule: RouteRule | None) -> tuple[float, str]:
    """How long a call under the rule may take, all tries included: (ms, why)."""
    timeout = _ms(view.timeout_of(rule) if rule is not None else view.mesh.defaults.timeout)
    tries = tries_of(rule) if rule is not None else 1
    per_try = _ms(rule.retries.per_try_timeout) if tries > 1 else INFINITE
    if per_try != INFINITE:
        backoff = _backoff_ms(rule, tries - 1)
        worst = tries * per_try + backoff
        if worst < timeout:
            return worst, f"{tries} tries × per_try_timeout {_text(per_try)} + up to {_text(backoff)} of back-off"
    return timeout, _timeout_text(rule, timeout) + (f", {tries} tries included" if tries > 1 else "")


def _timeouts(graph: CallGraph) -> Iterator[Diagnostic]:
    """A plain inner timeout longer than the outer one wastes the inner work once; W602 is about retries:
    the inner call's tries outlive the outer wait, or the outer per_try_timeout gives up on a try (and
    retries it) while the inner call it started goes on."""
    view = graph.view
    default_at = view.mesh.where("defaults", "timeout")
    for outer in sorted(view.views):
        if not graph.is_http(outer) or not graph.callers_of(outer):
            continue
        inner = []  # (-ms, callee, rule index or -1, ms, why, tries)
        for e in graph.out[outer]:
            if e.mirror or not graph.is_http(e.callee):
                continue
            for j, rule in graph.rules_of(e.callee, outer) if graph.route_of(e.callee) else [(-1, None)]:
                ms, why = _takes(view, rule)
                inner.append((-ms, e.callee, j, ms, why, tries_of(rule) if rule is not None else 1))
        route = graph.route_of(outer)
        for i, rule in graph.rules_of(outer) if route else [(-1, None)]:
            limit, how, field = _limit(view, rule)
            per_try = field == "retries.per_try_timeout"
            worse = sorted(x for x in inner if x[3] > limit and (per_try or x[5] > 1))
            if not worse:
                continue
            _, callee, j, ms, why, _ = worse[0]
            inner_route = graph.route_of(callee)
            inner_at = inner_route.where("rules", j) if j >= 0 else default_at
            outer_at = route.where("rules", i) if route else default_at
            if field:  # the caller's limit is written in the rule: the warning goes there
                where, subject, path = route.where("rules", i, *field.split(".")), route.subject, f"rules[{i}].{field}"
            else:  # else at the inner rule that retries
                where, subject, path = inner_at, inner_route.subject, f"rules[{j}]"
            yield _warn(
                "W602",
                f"callers of '{outer}' give up after {_text(limit)} ({how}, {{0}}), but '{outer}' calling '{callee}' "
                f"may {'go on without limit' if ms == INFINITE else 'take ' + _text(ms)} ({why}, {{1}}): the caller gets 504 (or retries) while '{callee}' still "
                f"works for nobody; give the outer call a longer limit than the inner one can take, or the inner "
                f"call fewer tries or a shorter timeout",
                where, subject, path, refs=(outer_at, inner_at),
            )


# ---------------------------------------------------------------- W603


def _pools(graph: CallGraph) -> Iterator[Diagnostic]:
    view = graph.view
    for name in sorted(set(view.views) | set(view.externals)):
        route, rules = graph.route_of(name), graph.rules_of(name)
        retrying = [(i, r) for i, r in rules if tries_of(r) > 1]
        callers = graph.callers_of(name)
        if route is None or not retrying or not callers:
            continue
        budget = route.retry_budget
        # An ExternalService has no inbound side: each caller's own cluster is the pool.
        senders = callers if name in view.views else callers[:1]
        for pool, versions, pool_at in _version_pools(view, name):
            # A caller's sidecar has at most max_requests requests (retries included) active toward a version.
            per_caller = min(
                pool.max_requests, max(budget.min_concurrency, math.ceil(budget.percent * pool.max_requests / 100))
            )
            total = len(senders) * per_caller
            if total < pool.max_requests:
                continue
            if "retry_budget" in route.model_fields_set:
                where, path = route.where("retry_budget"), "retry_budget"
            else:
                where, path = route.where("rules", retrying[0][0], "retries"), f"rules[{retrying[0][0]}].retries"
            count = f"{len(senders)} callers ({', '.join(senders)}) × " if len(senders) > 1 else f"{senders[0]}: "
            whose = f"version {', '.join(versions)}'s" if versions else "its"
            yield _warn(
                "W603",
                f"retries to '{name}' can fill {whose} connection pool: {count}up to {per_caller} retries in flight "
                f"(retry_budget: {budget.percent}% of max_requests {pool.max_requests}, at least min_concurrency "
                f"{budget.min_concurrency}{', at most max_requests' if per_caller == pool.max_requests else ''}; with "
                f"a budget Envoy ignores max_retries) = {total}, not less than "
                f"max_requests {pool.max_requests} ({{0}}): in an outage retries alone can take every slot and first "
                f"tries fail with 503 (overflow); lower retry_budget.percent or min_concurrency, or raise max_requests",
                where, route.subject, path, refs=(pool_at,),
            )


def _version_pools(view, name: str):
    """(pool, the versions with a pool of their own or () for the service's, where max_requests is written) for
    each distinct pool of the service's versions: each version's clusters have their own circuit breaker."""
    target = view.views.get(name) or view.externals.get(name)
    tp = view.traffic.get(name)
    shared: list[str] = []
    out = []
    for v in target.versions:
        p = target.protections[v]
        if p.origin["connection_pool"][0] == "version":
            out.append((p.connection_pool, (v,), tp.where("versions", v, "connection_pool", "max_requests")))
        else:
            shared.append(v)
    if shared:
        at = (
            tp.where("connection_pool", "max_requests")
            if tp is not None and tp.connection_pool is not None
            else view.mesh.where("defaults", "connection_pool", "max_requests")
        )
        out.insert(0, (view.pool_of(name), (), at))
    return out


# ---------------------------------------------------------------- W604


def _cycles(graph: CallGraph) -> Iterator[Diagnostic]:
    for group in strongly_connected(graph.adjacency()):
        members = set(group)
        inside = {n: [e for e in graph.out[n] if e.callee in members] for n in group}
        retrying = sorted((e for n in group for e in inside[n] if e.tries > 1), key=lambda e: (e.caller, e.callee))
        best = None
        for e in retrying[:MAX_CYCLE_EDGES]:
            back = _shortest(inside, e.callee, e.caller)
            if back is None:
                continue
            cycle = _rotate([e] + back)
            product = math.prod(x.tries for x in cycle)
            key = (-product, len(cycle), [x.caller for x in cycle])
            if best is None or key < best[0]:
                best = (key, cycle)
        if best is None:
            continue
        cycle = best[1]
        blamed = _blame(cycle)
        _, shown = _product(cycle)
        path = _path(cycle)
        yield _warn(
            "W604",
            f"retries multiply around the call cycle {path}: {shown} tries per turn, so a request that goes "
            f"round the loop multiplies the load on every service in it at each turn; retry on no edge of the "
            f"loop (or break it), starting here ({blamed.tries} tries on {blamed.caller} → {blamed.callee})",
            blamed,
        )


def _shortest(inside: dict[str, list[Edge]], start: str, goal: str) -> list[Edge] | None:
    """The fewest edges from start to goal inside the group (breadth first, in sorted order)."""
    if start == goal:
        return []
    came: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for e in inside[node]:
            if e.callee == start or e.callee in came:
                continue
            came[e.callee] = e
            if e.callee == goal:
                path = []
                at = goal
                while at != start:
                    path.insert(0, came[at])
                    at = came[at].caller
                return path
            queue.append(e.callee)
    return None


def _rotate(cycle: list[Edge]) -> list[Edge]:
    """The cycle starting at its smallest node name (one cycle, one way to print it)."""
    first = min(range(len(cycle)), key=lambda i: cycle[i].caller)
    return cycle[first:] + cycle[:first]
