"""The ingress gateway, live: its Envoy (`OUT/<gateway>/`), and clients outside the mesh that speak HTTPS.

    gw = start_gateway(live_mesh, "ingress")            # like a sidecar, registered for teardown
    host, port = gw.edge("https")                        # the gateway listener named `https`
    ctx = tls_context(ca=certs / "ca.pem")               # verifies the chain and the name (SNI)
    r = https_many(host, port, 10, sni="shop.example.com", context=ctx)

A gateway is an Envoy like a sidecar (same bootstrap, same ENVOY_ARGS), so `GatewayEnvoy` is an
`EnvoySidecar` with its own log file name and a lookup of its listeners by the gateway listener's name.
Every client here is bounded in count and time, and can bind a loopback source address of its own, so
that what the upstream sees as the client address is known to the test.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .client import Response, read_until_closed, requests_over
from .sidecar import EnvoySidecar, _fresh_path
from .util import REQUEST_TIMEOUT, HarnessError


class GatewayEnvoy(EnvoySidecar):
    """The Envoy of a Gateway: `OUT/<gateway>/bootstrap.yaml`, logs in `envoy-gateway-<name>.log`."""

    @property
    def label(self) -> str:
        return f"envoy for gateway '{self.service}'"

    def _new_log(self) -> Path:
        return _fresh_path(self.log_dir / f"envoy-gateway-{self.service}.log")

    def edge(self, listener: str) -> tuple[str, int]:
        """(host, port) of the Envoy listener made for the gateway listener `listener` (from the output)."""
        for name, where in self.listeners.items():
            if name == listener or name.split("|")[-1] == listener and name.split("|")[0] in ("edge", "gateway"):
                return where
        raise HarnessError(f"gateway '{self.service}' has no listener for '{listener}': {sorted(self.listeners)}")

    def edge_listener_name(self, listener: str) -> str:
        """The Envoy listener's name for the gateway listener `listener`."""
        host, port = self.edge(listener)
        return next(n for n, w in self.listeners.items() if w == (host, port))


def start_gateway(live_mesh, name: str, **kwargs) -> GatewayEnvoy:
    """Start the gateway's Envoy from `live_mesh.out/<name>` and wait until it is LIVE with its config accepted;
    `live_mesh.close()` stops it with the sidecars. A gateway of that name that still runs is stopped first (a
    restart: Envoy binds its listeners with SO_REUSEPORT, so two would share the ports)."""
    require_accepted = kwargs.pop("require_accepted", True)
    if name in live_mesh.sidecars:
        live_mesh.sidecars[name].stop()
        live_mesh._stopped.append(live_mesh.sidecars[name])
    gw = GatewayEnvoy(name, live_mesh.out, live_mesh.logs, binary=live_mesh.binary, **kwargs)
    live_mesh.sidecars[name] = gw
    return gw.start(require_accepted=require_accepted)


# ---------------------------------------------------------------------------
# TLS clients
# ---------------------------------------------------------------------------


def tls_context(
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    *,
    check_hostname: bool = True,
    max_version: ssl.TLSVersion | None = None,
    alpn: tuple[str, ...] = ("http/1.1",),
) -> ssl.SSLContext:
    """A client context as a browser uses it: the chain must lead to `ca` and the certificate must name the SNI
    host (`check_hostname`); `cert`/`key`: a client certificate to present."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.check_hostname = check_hostname
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    if max_version is not None:
        ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class SniConnection(http.client.HTTPSConnection):
    """HTTPS to an address with a chosen SNI (and name check) and an optional loopback source address."""

    def __init__(self, host, port, *, sni: str, context: ssl.SSLContext, timeout: float, source: str | None):
        super().__init__(host, port, context=context, timeout=timeout, source_address=(source, 0) if source else None)
        self._sni = sni
        self.peer: x509.Certificate | None = None

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout, self.source_address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._sni)
        der = self.sock.getpeercert(binary_form=True)
        self.peer = x509.load_der_x509_certificate(der) if der else None


def https_many(
    host: str,
    port: int,
    n: int,
    path: str = "/",
    *,
    sni: str,
    context: ssl.SSLContext,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host_header: str | None = None,
    body: bytes | str | None = None,
    source: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
    max_seconds: float = 30.0,
    new_connection_each: bool = False,
) -> list[Response]:
    """`n` HTTPS requests with SNI `sni` (the Host header too, unless `host_header`), over keep-alive connections
    (a fresh one after the server closes, or for each request with `new_connection_each`).

    Bounded in count (`n` <= 10000) and time. A request that fails on a reused connection before any response
    is sent once more on a fresh one (the keep-alive race); any other error raises (a TLS failure included).
    Each Response carries the serial of the certificate the server presented in `headers['x-test-peer-serial']`.
    """
    def peer_serial(conn: SniConnection, got: dict[str, str]) -> None:
        if conn.peer is not None:
            got["x-test-peer-serial"] = str(conn.peer.serial_number)

    return requests_over(
        lambda: SniConnection(host, port, sni=sni, context=context, timeout=timeout, source=source),
        n, method, path, body, {"Host": host_header or sni, **(headers or {})}, max_seconds,
        new_connection_each=new_connection_each, annotate=peer_serial, who="https_many",
    )


def https_one(host: str, port: int, path: str = "/", **kwargs) -> Response:
    return https_many(host, port, 1, path, **kwargs)[0]


@dataclass
class Handshake:
    """How a TLS handshake ended: `ok`, the server's certificate, the negotiated version, or the error."""

    ok: bool
    peer: x509.Certificate | None = None
    version: str | None = None
    error: str | None = None
    response: bytes = b""
    alpn: str | None = None


def handshake(
    host: str, port: int, *, sni: str | None, context: ssl.SSLContext, request: bytes | None = None, timeout: float = 5.0
) -> Handshake:
    """Connect, handshake with `sni`, optionally send `request` and read the answer until the peer closes.

    TLS 1.3 clients learn that the server refused their (missing) certificate only on the first read, so a
    handshake that "succeeds" but whose first read fails is reported as not ok, with the error.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                der = tls.getpeercert(binary_form=True)
                peer = x509.load_der_x509_certificate(der) if der else None
                version = tls.version()
                alpn = tls.selected_alpn_protocol()
                got = b""
                if request is not None:
                    tls.sendall(request)
                    got = read_until_closed(tls, timeout)
                return Handshake(True, peer, version, None, got, alpn)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, socket.timeout, OSError) as exc:
        return Handshake(False, None, None, f"{type(exc).__name__}: {exc}")
