"""Authorization of a tcp service: two `envoy.filters.network.rbac` filters before `tcp_proxy`, deny first.

The same rules as the HTTP side (compiler/emit/rbac.py, principals from
compiler/emit/rbac_rules.py), decided once per connection on who the caller
is: the client certificate's SPIFFE ID (`from`, `namespaces` and their `not_`
forms) and the peer address (`ip_blocks`, `not_ip_blocks`). Envoy evaluates the network
RBAC filter when the first bytes arrive from the caller (after the TLS
handshake) and closes a refused connection before anything reaches the app.

Envoy's `tcp_proxy` connects to the app as soon as a connection is accepted,
before any filter has decided anything; with enforcing rules meshc makes it
wait for the caller's first bytes (`upstream_connect_mode: ON_DOWNSTREAM_DATA`),
so a refused caller never opens a connection to the app either. The cost:
a server-first protocol (the app speaks first: SMTP, MySQL) waits for the
caller, which waits for the app, until a timeout. Dry-run rules change nothing
about the connection.

Stats (the listener's stat prefix `inbound_tcp_<port>`, see `stat_prefix`):
`<prefix>.<deny|allow>.rbac.denied` / `.allowed` when enforcing,
`<prefix>.<deny|allow>.rbac.shadow_denied` / `.shadow_allowed` in dry-run mode.
"""

from __future__ import annotations

from compiler.emit import names, rbac_rules
from compiler.emit.common import typed
from compiler.ir import AccessRule, TcpListener

DENY = "meshc.authz.deny"
ALLOW = "meshc.authz.allow"
TYPE = "envoy.extensions.filters.network.rbac.v3.RBAC"

EARLY_DATA_BYTES = 65536
"""What tcp_proxy buffers from the caller while it connects to the app (then it stops reading)."""


def _any_connection(_: AccessRule) -> dict:
    """A connection asks for nothing a rule could tell apart: the permission is always `any`."""
    return {"any": True}


def stat_prefix(l: TcpListener, kind: str) -> str:
    """`inbound_tcp_<port>.<deny|allow>`: Envoy counts in `<this>.rbac.*`."""
    return f"{names.stat_prefix(l)}.{kind}"


def _filter(l: TcpListener, name: str, action: str, rules: tuple[AccessRule, ...], kind: str) -> dict:
    body = rbac_rules.rules(action, rules, kind, _any_connection)
    if l.access.dry_run:
        config = typed(TYPE, stat_prefix=stat_prefix(l, kind), shadow_rules=body)
    else:
        config = typed(TYPE, stat_prefix=stat_prefix(l, kind), rules=body)
    return {"name": name, "typed_config": config}


def filters(l: TcpListener) -> list[dict]:
    """The RBAC filters of this listener, to put before `tcp_proxy` (none without access rules)."""
    a = l.access
    if a is None:
        return []
    out = []
    if a.deny:
        out.append(_filter(l, DENY, "DENY", a.deny, "deny"))
    if a.allow is not None:
        out.append(_filter(l, ALLOW, "ALLOW", a.allow, "allow"))
    return out


def holds_connect(l: TcpListener) -> bool:
    """Enforcing rules: tcp_proxy must not connect to the app before they have decided."""
    return l.access is not None and not l.access.dry_run and bool(filters(l))
