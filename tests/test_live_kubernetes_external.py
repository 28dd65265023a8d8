"""An ExternalService's CA bundle in pods, live, in the cluster in a box (tests/harness/cluster.py).

The caller's pod runs its sidecar as the Component's patch says, with the CA bundle mounted from the
user's ConfigMap `payments-ca` (a projected volume written kubelet-style, `..data` swap) at the folder of
`tls.ca`, inside the config folder's volume and beside the certificate Secret's (strict mTLS). The
external host is an HTTPS server on the node's bridge address (outside every pod), whose certificate
comes from a CA made in the test. Real Envoy reads the bundle from the mounted folder, and a bundle
changed in the ConfigMap reaches the same Envoy process through the swap. Figures print with -s.
"""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from harness import report, wait_until
from harness.netns import http_get, socket_in
from harness.outside import write_pki

pytestmark = pytest.mark.envoy

PORT, APP_PORT = 9080, 9081
HOST = "api.payments.example"
CA_PATH = "/etc/meshc/external/payments/ca.pem"


class NodeTlsServer:
    """An HTTPS server in the node's namespace (outside every pod): answers 200 `payments` and closes, counts
    handshakes.
    `use(cert, key)` switches the certificate for new connections."""

    def __init__(self, netns: str, address: str):
        self.sock = socket_in(netns)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.address, self.port = self.sock.getsockname()
        self.handshakes = self.requests = 0
        self.ctx: ssl.SSLContext | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def use(self, cert, key) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.ctx = ctx

    def start(self) -> "NodeTlsServer":
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                self.requests += 1
                # one request per connection: every call is a new handshake, checked against the bundle of now
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\npayments")
        except (ssl.SSLError, OSError):
            return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_the_ca_bundle_comes_from_its_configmap_and_a_change_reaches_the_running_sidecar(kube_cluster, tmp_path):
    c = kube_cluster
    ca1, cert1, key1 = write_pki(tmp_path / "pki", "one", [HOST])
    ca2, cert2, key2 = write_pki(tmp_path / "pki", "two", [HOST])
    server = NodeTlsServer(c.node, c.gateway)
    server.use(cert1, key1)
    server.start()
    try:
        c.build([
            c.mesh_doc(trust_domain="box.test", mtls={"mode": "strict"}),
            {"kind": "Service", "name": "frontend", "port": PORT, "app_port": APP_PORT, "calls": ["payments"]},
            {"kind": "ExternalService", "name": "payments", "host": HOST, "port": server.port,
             "endpoints": [f"{server.address}:{server.port}"], "tls": {"ca": CA_PATH}},
        ])
        assert c.last_build.ok, [d.render() for d in c.last_build.diagnostics]
        c.write_certs()
        # what `kubectl create configmap payments-ca --from-file=ca.pem` makes
        c.configmaps["payments-ca"] = {"ca.pem": ca1.read_bytes()}
        (pod,) = c.run_pods([("frontend", "default", 1)])
        (outbound,) = [l.port for l in c.sidecar_ir("frontend").listeners if l.direction == "outbound"]

        def call() -> int:
            return http_get(pod.netns, "127.0.0.1", outbound, "/v1/charges", headers={"Host": "payments"})[0]

        # The sidecar sees the three volumes, nested as the patch mounts them, all read-only.
        mounts = pod.envoy.process()["mounts"]
        assert {p: mounts.get(p) for p in ("/etc/meshc", "/etc/meshc/certs", "/etc/meshc/external/payments")} == {
            "/etc/meshc": "ro", "/etc/meshc/certs": "ro", "/etc/meshc/external/payments": "ro"}
        pid = pod.envoy.pid
        first = [call() for _ in range(3)]
        assert first == [200, 200, 200], first
        stat = "cluster.outbound|payments|default.ssl."

        # The host now serves a certificate from another CA: the sidecar refuses it (503 to the app).
        server.use(cert2, key2)
        refused_before = pod.envoy.stat(stat + "fail_verify_error")
        wait_until(lambda: call() == 503, 10, message="a certificate from an unknown CA refused")
        refused = pod.envoy.stat(stat + "fail_verify_error") - refused_before
        assert refused >= 1

        # The new CA goes into the ConfigMap; kubelet's sync swaps ..data in the mounted folder, Envoy reloads it.
        c.configmaps["payments-ca"] = {"ca.pem": ca2.read_bytes()}
        assert c.sync_volumes() == [pod.name]
        wait_until(lambda: call() == 200, 10, message="the new CA bundle applied")
        after = [call() for _ in range(3)]
        assert after == [200, 200, 200] and pod.envoy.pid == pid  # same process, no restart
        report("external CA in pods", first_calls=first, refused_after_cert_change=refused,
               after_configmap_update=after, handshakes=server.handshakes, requests=server.requests,
               same_pid=pod.envoy.pid == pid)
    finally:
        server.stop()
