"""Authorization on namespaces, peer IP blocks and negations, live in real Envoy sidecars over mTLS.

Model (compiler/policy/security.py AuthzRule): `namespaces` (any identity `spiffe://<td>/ns/<ns>/sa/...`),
`ip_blocks` (the connection's peer address, Envoy `direct_remote_ip`), and the negations `not_from`,
`not_namespaces`, `not_ip_blocks`, `not_paths`, `not_methods` (met when the request matches none of
them). Emitted (compiler/emit/rbac_rules.py, rbac.py) as RBAC principals `authenticated.principal_name`
prefix / `direct_remote_ip` CIDRs and `not_id`, permissions `not_rule`.

The mesh (one host): frontend, batch and scanner in namespace shop, admin-tool in ops; cart (http) in
shop; inventory (tcp, an echo app). Each sidecar has its own loopback address, and its outbound
connections leave from it, so a CIDR names one caller. Every request is also explained
(compiler/explain), and explain must predict Envoy's answer.
"""

from __future__ import annotations

import re

import pytest

from compiler import certs
from compiler.explain import Request, explain
from compiler.policy import AuthorizationPolicy, AuthzRule
from harness import report, wait_until
from test_live_tcp_authz import CONNECTIONS, echo, echoed, exchange, rbac_stats as tcp_stats, refused  # noqa: F401

pytestmark = pytest.mark.envoy

TRUST_DOMAIN = "authz-advanced.test"
RBAC = "http.inbound_http.rbac."
DENIED_BODY = "RBAC: access denied"
NAMESPACES = {"frontend": "shop", "batch": "shop", "scanner": "shop", "admin-tool": "ops"}
PASSED = {"deny.allowed": 1, "allow.allowed": 1}
REFUSED_BY_ALLOW = {"deny.allowed": 1, "allow.denied": 1}
REFUSED_BY_DENY = {"deny.denied": 1}


def start(live_mesh, tmp_path, cart_app, inventory_app):
    """Build with the two policies (no diagnostics), write certificates, start every sidecar."""
    scanner = live_mesh.placement("scanner").address
    frontend = live_mesh.placement("frontend").address
    docs = [
        live_mesh.mesh_doc(trust_domain=TRUST_DOMAIN, mtls={"mode": "strict"}),
        *(live_mesh.service(name, namespace=ns, calls=["cart", "inventory"]) for name, ns in NAMESPACES.items()),
        live_mesh.service("cart", namespace="shop", versions={"default": cart_app}),
        live_mesh.service("inventory", namespace="shop", protocol="tcp", versions={"default": [inventory_app.endpoint]}),
        AuthorizationPolicy(
            service="cart",
            allow=[
                # namespace shop, but not batch, and nothing under /internal
                AuthzRule(namespaces=["shop"], not_from=["batch"], not_paths=[{"prefix": "/internal"}]),
                # namespace ops: anything but DELETE and POST
                AuthzRule(namespaces=["ops"], not_methods=["DELETE", "POST"]),
            ],
            deny=[AuthzRule(ip_blocks=[f"{scanner}/32"])],  # scanner's sidecar address
        ),
        AuthorizationPolicy(
            service="inventory",
            allow=[AuthzRule(not_namespaces=["ops"], not_ip_blocks=[f"{frontend}/32"])],
        ),
    ]
    certs_root = tmp_path / "certs"
    result = live_mesh.build(docs, certs_root=str(certs_root))
    assert result.ok and not result.diagnostics, [d.render() for d in result.diagnostics]
    identities = {s.service: s.tls.identity for s in result.ir.sidecars}
    assert identities["admin-tool"] == f"spiffe://{TRUST_DOMAIN}/ns/ops/sa/admin-tool", identities
    certs.write_service_certs(certs_root, TRUST_DOMAIN, identities)
    live_mesh.start("cart", "inventory", *NAMESPACES)
    return result.ir


def http_stats(sidecar) -> dict[str, int]:
    return {k[len(RBAC):]: v for k, v in sidecar.stats(rf"^{re.escape(RBAC)}").items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)}


CASES = [
    # caller, method, path, status, RBAC delta on cart, what decides
    ("frontend", "GET", "/items", 200, PASSED, "namespace shop"),
    ("frontend", "GET", "/internalx", 200, PASSED, "not_paths /internal is a path prefix"),
    ("frontend", "GET", "/internal/keys", 403, REFUSED_BY_ALLOW, "not_paths"),
    ("frontend", "DELETE", "/items", 200, PASSED, "not_methods is only ops' rule"),
    ("batch", "GET", "/items", 403, REFUSED_BY_ALLOW, "not_from batch"),
    ("admin-tool", "GET", "/items", 200, PASSED, "namespace ops"),
    ("admin-tool", "GET", "/internal/keys", 200, PASSED, "ops' rule has no not_paths"),
    ("admin-tool", "DELETE", "/items", 403, REFUSED_BY_ALLOW, "not_methods"),
    ("admin-tool", "POST", "/items", 403, REFUSED_BY_ALLOW, "not_methods"),
    ("scanner", "GET", "/items", 403, REFUSED_BY_DENY, "ip_blocks: scanner's address"),
]


def test_namespaces_ip_blocks_and_negations(live_mesh, tmp_path, echo):  # noqa: F811
    cart_app = live_mesh.upstream("cart")
    ir = start(live_mesh, tmp_path, cart_app, echo)
    cart = live_mesh["cart"]
    statuses: dict[int, int] = {}
    disagreements = []
    for caller, method, path, status, stats, why in CASES:
        before = http_stats(cart)
        r = live_mesh.call_one(caller, "cart", path, method=method)
        grew = delta(before, http_stats(cart))
        assert r.status == status, (caller, method, path, why, r.status, r.text)
        if status == 403:
            assert r.text == DENIED_BODY, r.text
        assert grew == stats, (caller, method, path, why, grew)
        statuses[r.status] = statuses.get(r.status, 0) + 1
        said = explain(ir, Request(caller, "cart", method, path)).outcome
        predicted = said.status if said.kind == "response" else 200
        if predicted != r.status or not said.certain:
            disagreements.append(f"{caller} {method} {path}: envoy {r.status}, explain {predicted} ({said.summary})")
    assert not disagreements, "\n".join(disagreements)
    # Only what was allowed reached the app.
    allowed = [(m, p) for c, m, p, s, _, _ in CASES if s == 200]
    assert [(q.method, q.path) for q in cart_app.requests] == allowed
    totals = http_stats(cart)
    assert totals.get("deny.denied") == 1 and totals.get("allow.denied") == 4 and totals.get("allow.allowed") == 5, totals

    # ip_blocks is the connection's peer: X-Forwarded-For cannot forge it either way.
    scanner, frontend = (live_mesh.placement(n).address for n in ("scanner", "frontend"))
    forged = [
        ("scanner", {"x-forwarded-for": frontend}, 403),  # still scanner's address: deny[0]
        ("frontend", {"x-forwarded-for": scanner}, 200),  # still frontend's: not denied
    ]
    for caller, headers, status in forged:
        r = live_mesh.call_one(caller, "cart", "/items", headers=headers)
        assert r.status == status, (caller, headers, r.status, r.text)
        said = explain(ir, Request(caller, "cart", "GET", "/items", tuple(headers.items()))).outcome
        assert (said.status if said.kind == "response" else 200) == status, said
    assert scanner in cart_app.requests[-1].headers.get("x-forwarded-for", ""), "the forged header reached the app"
    totals = http_stats(cart)
    assert totals.get("deny.denied") == 2, totals

    # inventory (tcp): any namespace but ops, from any address but frontend's: only batch and scanner pass.
    port = next(s for s in ir.sidecars if s.service == "inventory").listeners[0].port
    inventory = live_mesh["inventory"]
    before = tcp_stats(inventory, port)
    tcp = {name: exchange(live_mesh[name], port, name) for name in NAMESPACES}
    assert echoed(tcp["batch"]) and echoed(tcp["scanner"]), tcp
    assert refused(tcp["frontend"]) and refused(tcp["admin-tool"]), tcp
    expected = {"allow.allowed": 2 * CONNECTIONS, "allow.denied": 2 * CONNECTIONS}

    def counted() -> bool:
        d = delta(before, tcp_stats(inventory, port))
        return all(d.get(k, 0) >= v for k, v in expected.items())

    wait_until(counted, timeout=10, message="inventory's RBAC counters")
    grew = delta(before, tcp_stats(inventory, port))
    assert grew == expected, grew
    for name in NAMESPACES:
        said = explain(ir, Request(name, "inventory")).outcome
        if (said.kind == "forwarded") != (name in ("batch", "scanner")):
            disagreements.append(f"inventory from {name}: explain {said.kind}")
    assert not disagreements, "\n".join(disagreements)
    accepted, received = echo.seen()
    assert accepted == 2 * CONNECTIONS and b"frontend" not in received and b"admin-tool" not in received
    report(
        "authz_advanced",
        http=statuses,
        rbac=totals,
        tcp={name: [h for *_, h in results] for name, results in tcp.items()},
        tcp_rbac=grew,
        explain_disagreements=0,
    )
