"""Authorization of a tcp service, live: network RBAC on the caller's certificate, before tcp_proxy.

Mesh: `web` and `other` both call `ledger`, a `protocol: tcp` service whose
app is a TCP echo server; mTLS strict everywhere, certificates made with
compiler.certs under tmp_path and read through `certs_root`. The test process
plays the apps of `web` and `other`: it connects to their sidecars' outbound
tcp listeners (`outbound|tcp|<ledger port>`), whose connections reach
ledger's sidecar over mTLS, so ledger's sidecar sees each caller's SPIFFE ID.

Ledger's inbound listener runs `envoy.filters.network.rbac` (deny filter, then
allow filter) before `tcp_proxy` (compiler/emit/tcp_rbac.py). A refused
connection is closed after the caller's first bytes without a connection to
the app ever being opened (tcp_proxy waits for those bytes), which the echo
app proves by counting the connections it accepted. Envoy counts each
decision in `inbound_tcp_<port>.<deny|allow>.rbac.{allowed,denied}`, and in
dry-run mode `...rbac.shadow_{allowed,denied}` while letting everyone through.

Loopback only; every wait is bounded.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import time

import pytest

from compiler import certs
from compiler.policy import Authorization, AuthorizationPolicy, AuthzRule
from harness import report, wait_until

pytestmark = pytest.mark.envoy

TRUST_DOMAIN = "tcp-authz.test"
LEDGER, WEB, OTHER = "ledger", "web", "other"
CONNECTIONS = 3  # per caller and scenario
IO_TIMEOUT = 5.0


# --------------------------------------------------------------------------
# the app: a TCP echo server that counts what reached it
# --------------------------------------------------------------------------


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class EchoApp:
    """Echoes every byte; records each accepted connection and the bytes it received."""

    def __init__(self):
        app = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(IO_TIMEOUT)
                got = bytearray()
                try:
                    while True:
                        data = self.request.recv(65536)
                        if not data:
                            break
                        got += data
                        self.request.sendall(data)
                except OSError:
                    pass
                with app.lock:
                    app.closed.append(bytes(got))

            def setup(self):
                with app.lock:
                    app.accepted += 1

        self.lock = threading.Lock()
        self.accepted = 0
        self.closed: list[bytes] = []  # bytes received, per finished connection
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def seen(self) -> tuple[int, bytes]:
        """(connections accepted, all bytes received on finished connections)."""
        with self.lock:
            return self.accepted, b"".join(self.closed)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)
        self.server.server_close()


@pytest.fixture
def echo():
    app = EchoApp()
    yield app
    app.stop()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def start_mesh(live_mesh, tmp_path, echo, *, policy: AuthorizationPolicy | None = None, default: str = "allow"):
    """web, other -> ledger (tcp, the echo app), mTLS strict, certificates written; all sidecars started."""
    certs_root = tmp_path / "certs"
    docs = [
        live_mesh.mesh_doc(
            trust_domain=TRUST_DOMAIN,
            mtls={"mode": "strict", "certs_dir": "/etc/meshc/certs"},
            authorization=Authorization(default=default),
        ),
        live_mesh.service(WEB, calls=[LEDGER]),
        live_mesh.service(OTHER, calls=[LEDGER]),
        live_mesh.service(LEDGER, protocol="tcp", versions={"default": [echo.endpoint]}),
    ]
    if policy is not None:
        docs.append(policy)
    result = live_mesh.build(docs, certs_root=str(certs_root))
    assert result.ok and not result.diagnostics, [d.render() for d in result.diagnostics]
    certs.write_service_certs(certs_root, TRUST_DOMAIN, {s.service: s.tls.identity for s in result.ir.sidecars})
    ledger = live_mesh.start(LEDGER)
    callers = {name: live_mesh.start(name) for name in (WEB, OTHER)}
    port = next(s for s in result.ir.sidecars if s.service == LEDGER).listeners[0].port
    return ledger, callers, port


def rbac_stats(sidecar, port: int) -> dict[str, int]:
    """`inbound_tcp_<port>.<deny|allow>.rbac.*` of ledger's sidecar, prefix stripped: {'allow.denied': 3, ...}."""
    prefix = f"inbound_tcp_{port}."
    out = {}
    for k, v in sidecar.stats(rf"^{re.escape(prefix)}(deny|allow)\.rbac\.").items():
        kind, _, counter = k[len(prefix):].partition(".rbac.")
        out[f"{kind}.{counter}"] = v
    return out


def changed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after)) if after.get(k, 0) != before.get(k, 0)}


def round_trip(host: str, port: int, msg: bytes) -> tuple[bytes, str]:
    """Send `msg` on a new connection and read until it came back or the peer closed (bounded):
    (bytes read, 'echoed' | 'answered' (something else) | 'closed' | 'reset' | 'timeout')."""
    got = b""
    try:
        with socket.create_connection((host, port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(msg)
            deadline = time.monotonic() + IO_TIMEOUT
            while len(got) < len(msg) and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    return got, "closed"
                got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return got, "reset"
    except socket.timeout:
        return got, "timeout"
    return got, "echoed" if got == msg else "answered"


def exchange(caller, port: int, label: str) -> list[tuple[bytes, bytes, str]]:
    """CONNECTIONS connections through the caller's outbound tcp listener, one message each:
    [(sent, received, how it ended)]."""
    host, lport = caller.listener(f"outbound|tcp|{port}")
    out = []
    for i in range(CONNECTIONS):
        msg = f"{label}-{i}\n".encode()
        out.append((msg, *round_trip(host, lport, msg)))
    return out


def echoed(results) -> bool:
    return all(got == msg for msg, got, _ in results)


def refused(results) -> bool:
    return all(got == b"" and how != "timeout" for _, got, how in results)


def settle(ledger, port: int, before: dict[str, int], expected: dict[str, int]) -> dict[str, int]:
    """Wait (bounded) until the RBAC counters rose by `expected`; return the change."""
    holder: list[dict[str, int]] = []

    def done() -> bool:
        holder[:] = [changed(before, rbac_stats(ledger, port))]
        return all(holder[0].get(k, 0) >= v for k, v in expected.items())

    wait_until(done, timeout=10, message=lambda: f"RBAC counters {expected} (now {holder[0] if holder else '?'})")
    return holder[0]


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_allow_list_lets_web_through_and_closes_other_before_the_app(live_mesh, tmp_path, echo):
    """allow: [{from: [web]}]: web's bytes reach the echo app and come back; other's connections are
    closed, the app never sees a connection from them, and `allow.rbac.denied` counts them."""
    policy = AuthorizationPolicy(service=LEDGER, allow=[AuthzRule(from_=[WEB])])
    ledger, callers, port = start_mesh(live_mesh, tmp_path, echo, policy=policy)
    before = rbac_stats(ledger, port)

    web = exchange(callers[WEB], port, "web")
    assert echoed(web), web
    wait_until(lambda: len(echo.closed) == CONNECTIONS, timeout=5, message="the app to finish web's connections")

    other = exchange(callers[OTHER], port, "other")
    assert refused(other), other
    d = settle(ledger, port, before, {"allow.denied": CONNECTIONS, "allow.allowed": CONNECTIONS})
    accepted, received = echo.seen()
    assert accepted == CONNECTIONS, f"the app accepted {accepted - CONNECTIONS} connection(s) from other"
    assert b"other" not in received and b"web-0" in received
    assert d == {"allow.allowed": CONNECTIONS, "allow.denied": CONNECTIONS}, d
    report("tcp_authz_allow_list", web=[h for *_, h in web], other=[h for *_, h in other],
           app_accepted=accepted, rbac=d)


def test_deny_wins_over_allow(live_mesh, tmp_path, echo):
    """other is in both lists: the deny filter runs first and refuses it (`deny.rbac.denied`);
    web passes both filters."""
    policy = AuthorizationPolicy(
        service=LEDGER, allow=[AuthzRule(from_=[WEB, OTHER])], deny=[AuthzRule(from_=[OTHER])]
    )
    ledger, callers, port = start_mesh(live_mesh, tmp_path, echo, policy=policy)
    before = rbac_stats(ledger, port)

    web = exchange(callers[WEB], port, "web")
    other = exchange(callers[OTHER], port, "other")
    assert echoed(web), web
    assert refused(other), other
    d = settle(ledger, port, before, {"deny.denied": CONNECTIONS, "allow.allowed": CONNECTIONS})
    assert d == {"deny.allowed": CONNECTIONS, "deny.denied": CONNECTIONS, "allow.allowed": CONNECTIONS}, d
    accepted, received = echo.seen()
    assert accepted == CONNECTIONS and b"other" not in received
    report("tcp_authz_deny_wins", rbac=d, app_accepted=accepted)


def test_dry_run_lets_other_through_and_counts_a_shadow_denial(live_mesh, tmp_path, echo):
    """mode: dry_run: nobody is refused, other's connections are counted in `allow.rbac.shadow_denied`."""
    policy = AuthorizationPolicy(service=LEDGER, mode="dry_run", allow=[AuthzRule(from_=[WEB])])
    ledger, callers, port = start_mesh(live_mesh, tmp_path, echo, policy=policy)
    before = rbac_stats(ledger, port)

    web = exchange(callers[WEB], port, "web")
    other = exchange(callers[OTHER], port, "other")
    assert echoed(web), web
    assert echoed(other), other
    d = settle(ledger, port, before, {"allow.shadow_denied": CONNECTIONS, "allow.shadow_allowed": CONNECTIONS})
    assert d == {"allow.shadow_allowed": CONNECTIONS, "allow.shadow_denied": CONNECTIONS}, d
    wait_until(lambda: echo.seen()[0] == 2 * CONNECTIONS, timeout=5, message="the app to see every connection")
    report("tcp_authz_dry_run", rbac=d, app_accepted=echo.seen()[0])


def test_mesh_default_deny_without_policy_refuses_everyone(live_mesh, tmp_path, echo):
    """authorization: {default: deny} and no AuthorizationPolicy for ledger: every caller is refused
    (fail closed), and the app never sees a connection."""
    ledger, callers, port = start_mesh(live_mesh, tmp_path, echo, default="deny")
    before = rbac_stats(ledger, port)

    web = exchange(callers[WEB], port, "web")
    other = exchange(callers[OTHER], port, "other")
    assert refused(web), web
    assert refused(other), other
    d = settle(ledger, port, before, {"allow.denied": 2 * CONNECTIONS})
    assert d == {"allow.denied": 2 * CONNECTIONS}, d
    assert echo.seen() == (0, b"")
    report("tcp_authz_default_deny", rbac=d, app_accepted=0)


def test_plaintext_straight_to_the_inbound_listener_is_refused(live_mesh, tmp_path, echo):
    """Without a client certificate there is no identity to allow: a strict listener answers a
    plaintext client with a TLS alert at most, echoes nothing, and nothing reaches the app."""
    policy = AuthorizationPolicy(service=LEDGER, allow=[AuthzRule(from_=[WEB])])
    ledger, _, _ = start_mesh(live_mesh, tmp_path, echo, policy=policy)
    host, port = ledger.inbound
    got, how = round_trip(host, port, b"plain\n")
    assert b"plain" not in got and how in ("answered", "closed", "reset"), (got, how)
    assert echo.seen() == (0, b"")
