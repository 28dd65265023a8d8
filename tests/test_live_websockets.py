"""WebSockets, live: TrafficPolicy `websockets: true` lets `Upgrade: websocket` through every caller's routes to
the service, a Gateway's and its own inbound routes (Envoy route `upgrade_configs`); any other route answers
an upgrade 403. The app is a tiny WebSocket echo server (raw sockets: handshake, unmasking, echo).

Every wait is bounded (socket timeouts); nothing sleeps a fixed time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import socketserver

import pytest

from compiler.explain import Request, explain
from harness import report
from harness.gateway import start_gateway
from harness.socketapp import App
from test_live_connections import CALLEE, CALLER, IO_TIMEOUT

pytestmark = pytest.mark.envoy


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def read_head(sock) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def recv_exact(sock, n: int, buf: bytes = b"") -> tuple[bytes, bytes]:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)}/{n} bytes")
        buf += chunk
    return buf[:n], buf[n:]


def read_frame(sock, buf: bytes = b"") -> tuple[int, bytes, bytes]:
    """(opcode, payload, rest) of one frame, unmasking a masked one; payloads under 126 bytes only."""
    hdr, buf = recv_exact(sock, 2, buf)
    opcode, masked, length = hdr[0] & 0x0F, hdr[1] & 0x80, hdr[1] & 0x7F
    assert length < 126, length
    mask = b""
    if masked:
        mask, buf = recv_exact(sock, 4, buf)
    payload, buf = recv_exact(sock, length, buf)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload, buf


def frame(opcode: int, payload: bytes, mask: bytes | None) -> bytes:
    head = bytes([0x80 | opcode, (0x80 if mask else 0) | len(payload)])
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WebSocketEcho(socketserver.BaseRequestHandler):
    """Answers an `Upgrade: websocket` request with 101 and echoes text frames until a close frame;
    records ("upgrade", path) or ("plain", first line)."""

    def handle(self):
        app: App = self.server.app  # type: ignore[attr-defined]
        sock = self.request
        sock.settimeout(IO_TIMEOUT)
        try:
            head, buf = read_head(sock)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
            if headers.get("upgrade", "").lower() != "websocket":
                app.record(("plain", lines[0]))
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain")
                return
            app.record(("upgrade", lines[0].split(" ")[1]))
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                + f"sec-websocket-accept: {ws_accept(headers['sec-websocket-key'])}\r\n\r\n".encode()
            )
            while not app.stopping.is_set():
                opcode, payload, buf = read_frame(sock, buf)
                if opcode == 0x8:
                    sock.sendall(frame(0x8, payload, None))
                    return
                sock.sendall(frame(opcode, b"echo:" + payload, None))
        except (OSError, ConnectionError):
            return


def ws_upgrade(host: str, port: int, authority: str, path: str) -> tuple[int, socket.socket, bytes, str]:
    """Send the upgrade request; (status, socket, bytes after the head, head text)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head, rest = read_head(sock)
    text = head.decode("latin-1")
    status = int(text.split(" ")[1]) if text else 0
    if status == 101:
        assert f"sec-websocket-accept: {ws_accept(key)}".lower() in text.lower(), text
    return status, sock, rest, text


def test_websockets_pass_through_both_sidecars_only_where_enabled(live_mesh, apps):
    """chat has `websockets: true`, catalog not: an upgrade from web's app to chat gets 101 through web's and
    chat's sidecars and 5 text frames come back echoed; the same upgrade to catalog gets 403 from web's
    sidecar and catalog's app never sees it (a plain request to catalog still passes)."""
    chat_app, catalog_app = apps(WebSocketEcho), apps(WebSocketEcho)
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(CALLER, calls=["chat", CALLEE]),
            live_mesh.service("chat", versions={"default": [chat_app.endpoint]}),
            live_mesh.service(CALLEE, versions={"default": [catalog_app.endpoint]}),
            {"kind": "TrafficPolicy", "service": "chat", "websockets": True},
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(CALLER)
    chat = live_mesh.start("chat")
    live_mesh.start(CALLEE)
    host, port = front.outbound

    status, sock, buf, head = ws_upgrade(host, port, "chat", "/room/1")
    echoed = []
    with sock:
        assert status == 101, head
        for i in range(5):
            sock.sendall(frame(0x1, f"hello {i}".encode(), os.urandom(4)))
            opcode, payload, buf = read_frame(sock, buf)
            assert opcode == 0x1, opcode
            echoed.append(payload.decode())
        sock.sendall(frame(0x8, b"\x03\xe8", os.urandom(4)))
        opcode, _, buf = read_frame(sock, buf)
        assert opcode == 0x8
    assert echoed == [f"echo:hello {i}" for i in range(5)]
    assert chat_app.records == [("upgrade", "/room/1")], chat_app.records

    status, sock, _, head = ws_upgrade(host, port, CALLEE, "/room/1")
    sock.close()
    assert status == 403, head
    assert catalog_app.records == [], catalog_app.records
    plain = live_mesh.call_one(CALLER, CALLEE, "/plain")
    assert (plain.status, plain.text) == (200, "plain")
    assert catalog_app.records == [("plain", "GET /plain HTTP/1.1")], catalog_app.records

    upgrades = {
        "caller": front.stats(r"^http\.outbound_http\.downstream_cx_upgrades_total$"),
        "chat": chat.stats(r"^http\.inbound_http\.downstream_cx_upgrades_total$"),
    }
    assert upgrades["caller"] == {"http.outbound_http.downstream_cx_upgrades_total": 1}, upgrades
    assert upgrades["chat"] == {"http.inbound_http.downstream_cx_upgrades_total": 1}, upgrades
    # meshc explain predicts both answers from the IR alone.
    upgrade = (("connection", "Upgrade"), ("upgrade", "websocket"))
    ir = live_mesh.last_build.ir
    allowed = explain(ir, Request(CALLER, "chat", "GET", "/room/1", upgrade)).outcome
    refused = explain(ir, Request(CALLER, CALLEE, "GET", "/room/1", upgrade)).outcome
    assert (allowed.kind, allowed.versions) == ("forwarded", (("default", 1.0),)), allowed
    assert (refused.kind, refused.status) == ("response", 403), refused
    report("websockets", frames_echoed=len(echoed), refused_status=status, upgrades=upgrades,
           explain=(allowed.kind, refused.status))


def test_websockets_pass_a_gateway_to_the_service_that_allows_them(live_mesh, apps):
    """An outside client upgrades through a Gateway's http listener: /chat (chat: websockets true) gets 101 and
    its frames echoed through the gateway and chat's sidecar; / (catalog) gets 403 from the gateway."""
    chat_app, catalog_app = apps(WebSocketEcho), apps(WebSocketEcho)
    address = live_mesh.loopback.address()
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service("chat", versions={"default": [chat_app.endpoint]}),
            live_mesh.service(CALLEE, versions={"default": [catalog_app.endpoint]}),
            {"kind": "TrafficPolicy", "service": "chat", "websockets": True},
            {
                "kind": "Gateway", "name": "edge", "address": address, "admin_port": live_mesh.loopback.port(address),
                "listeners": [{"name": "web", "port": live_mesh.loopback.port(address)}],
                "routes": [{"path": "/chat", "to": "chat"}, {"to": CALLEE}],
            },
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    live_mesh.start("chat", CALLEE)
    gw = start_gateway(live_mesh, "edge")
    host, port = gw.edge("web")

    status, sock, buf, head = ws_upgrade(host, port, "shop.example", "/chat/room")
    with sock:
        assert status == 101, head
        sock.sendall(frame(0x1, b"from outside", os.urandom(4)))
        opcode, payload, buf = read_frame(sock, buf)
    assert (opcode, payload) == (0x1, b"echo:from outside")
    assert chat_app.records == [("upgrade", "/chat/room")], chat_app.records

    status, sock, _, head = ws_upgrade(host, port, "shop.example", "/room")
    sock.close()
    assert status == 403, head
    assert catalog_app.records == [], catalog_app.records
    report("websockets_gateway", echoed=payload.decode(), refused_status=status)
