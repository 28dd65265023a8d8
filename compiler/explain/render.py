"""The text form of an explanation: one line per step, then the answer."""

from __future__ import annotations

from compiler.explain.model import Explanation


def render_text(e: Explanation) -> str:
    rows = [(f"{s.side} {s.sidecar}".rstrip(), s.what, s.decision, s.source or "") for s in e.steps]
    w_side = max((len(r[0]) for r in rows), default=0)
    w_what = max((len(r[1]) for r in rows), default=0)
    lines = []
    for side, what, decision, source in rows:
        line = f"{side:<{w_side}}  {what:<{w_what}}  {decision}"
        lines.append(f"{line}  {source}" if source else line)
    o = e.outcome
    status = f" {o.status}" if o.status is not None else ""
    lines.append(f"=> {o.kind}{status}: {o.summary}")
    for a in o.alternatives:
        chance = f"{a.percent:g}%" if a.percent is not None else "depends on traffic"
        lines.append(f"   or {a.status} ({chance}): {a.why}")
    return "\n".join(lines) + "\n"
