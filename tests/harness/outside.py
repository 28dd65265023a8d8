"""Stand-ins for hosts outside the mesh (tests/test_live_egress.py): an HTTPS API, a TCP database, a PKI.

Loopback only. `TlsApp` records what each TLS handshake carried (SNI, protocol
version, a client certificate if any) and every request, and answers a script of
statuses; `EchoServer` echoes one read per connection; `write_pki` makes a CA and
a server certificate for given DNS names (files, for an ExternalService's `tls.ca`).
"""

from __future__ import annotations

import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from compiler import certs


class TlsApp:
    """An HTTPS/1.1 server on loopback that records handshakes and requests and answers a script.

    `client_ca`: ask every client for a certificate (optional) and accept one from this CA, so a
    sidecar that wrongly sent its mesh certificate would be seen doing it.
    """

    def __init__(self, host: str, cert: Path, key: Path, client_ca: Path | None = None, tls: bool = True):
        self.handshakes: list[dict] = []  # {"sni", "version", "peer_cert"}, one per completed handshake
        self._sni_of: dict = {}  # TLS socket -> the SNI its ClientHello carried
        self.requests: list[dict] = []  # {"host", "path", "headers", "tls"} (tls: the protocol version, None in plaintext)
        self.failed_handshakes = 0
        self.script: list[int] = []
        self.delay = 0.0  # seconds before each answer
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        ctx = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            ctx.sni_callback = self._sni
            if client_ca is not None:
                ctx.verify_mode = ssl.CERT_OPTIONAL
                ctx.load_verify_locations(client_ca)
        self._server = _Server((host, 0), _handler(self), ctx)
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _sni(self, sslsock, name, ctx) -> None:
        with self._lock:
            self._sni_of[sslsock] = name

    def _next_status(self) -> int:
        with self._lock:
            return self.script.pop(0) if self.script else 200

    def start(self) -> "TlsApp":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases handlers waiting out a delay
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, ctx: ssl.SSLContext | None):
        self.ctx = ctx
        super().__init__(address, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ctx is None:
            return sock, addr
        # The handshake happens in the handler's thread (first read), never in the accept loop.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        pass  # a refused handshake or a reset connection: counted by the handler where it matters, not printed


def _handler(app: TlsApp):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                try:
                    self.connection.do_handshake()
                except (ssl.SSLError, OSError):
                    with app._lock:
                        app.failed_handshakes += 1
                        app._sni_of.pop(self.connection, None)
                    raise
                with app._lock:
                    app.handshakes.append(
                        {
                            "sni": app._sni_of.pop(self.connection, None),
                            "version": self.connection.version(),
                            "peer_cert": self.connection.getpeercert(binary_form=True),
                        }
                    )

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            with app._lock:
                app.requests.append(
                    {
                        "host": self.headers.get("host"),
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "tls": self.connection.version() if isinstance(self.connection, ssl.SSLSocket) else None,
                    }
                )
            status = app._next_status()
            if app.delay:
                app._stopping.wait(app.delay)
            body = f"external {status}\n".encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, *args) -> None:
            pass

    return Handler


class EchoServer:
    """A TCP server that echoes one read back per connection (a database stand-in)."""

    def __init__(self, host: str):
        self.sock = socket.create_server((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                data = conn.recv(4096)
                conn.sendall(b"echo:" + data)

    def start(self) -> "EchoServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def write_pki(root: Path, name: str, dns_names: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `dns_names` under root/name/: (ca.pem, cert.pem, key.pem)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = certs.make_ca(f"{name}.test")
    key, cert = certs.issue(ca_key, ca_cert, None, dns_names, usages=("server",))
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
