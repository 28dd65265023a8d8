"""`meshc explain`: follow one request through the mesh from the IR alone (never Envoy config, never raw policy).

    from compiler.explain import Request, explain, render_text
    e = explain(ir, Request("productpage", "reviews", "GET", "/reviews/1", (("end-user", "jason"),)))

The caller's sidecar (its outbound listener: path normalisation, virtual host by Host, route rules in order,
the route's filters and action), the connection (mTLS, identities), then the callee's sidecar (its inbound
listener: path normalisation, JWT, authorization, rate limits, the version's endpoints). A Gateway caller
enters at its edge listener instead. See compiler/explain/model.py for the data returned.
"""

from __future__ import annotations

from compiler.explain.model import Alternative, Explanation, ExplainError, Outcome, Request, Step
from compiler.explain.flow import explain
from compiler.explain.render import render_text

__all__ = ["Alternative", "ExplainError", "Explanation", "Outcome", "Request", "Step", "explain", "render_text"]
