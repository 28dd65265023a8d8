"""A gateway in pods, live, in the cluster in a box (tests/harness/cluster.py, tests/harness/gatewaypod.py).

The gateway's pods run as its Deployment in `out/kubernetes/ingress/gateway.yaml` says (command, user 101
without capabilities, read-only root, the pod's sysctl for ports 80 and 443, its ConfigMap, its mesh
certificate Secret and the edge certificate Secret projected into /etc/edge/shop, the readiness probe);
productpage's pods run as the sidecar Component says. A client outside the mesh (the node's namespace,
as a load balancer with externalTrafficPolicy Local hands connections over: the client's own address)
speaks HTTPS with SNI to each gateway pod, and plain HTTP on 80; the gateway resolves productpage's
versions through cluster DNS and calls them with mTLS as `ingress`, which productpage alone allows.
"""

from __future__ import annotations

import time

import pytest

from harness import report, wait_until
from harness.netns import http_get

pytestmark = pytest.mark.envoy

SNI = "shop.example.com"


def _docs(cluster) -> list:
    return [
        cluster.mesh_doc(mtls={"mode": "strict"}),
        {"kind": "Service", "name": "productpage", "port": 9080, "app_port": 9081, "versions": {"v1": {}, "v2": {}}},
        {"kind": "Route", "service": "productpage", "rules": [{"to": {"v1": 50, "v2": 50}}]},
        {"kind": "AuthorizationPolicy", "service": "productpage", "allow": [{"from": ["ingress"]}]},
        {
            "kind": "Gateway", "name": "ingress", "namespace": "edge",
            "listeners": [
                {"name": "http", "port": 80},
                {"name": "https", "port": 443, "protocol": "https", "tls": {"certificates": [
                    {"hosts": [SNI], "cert": "/etc/edge/shop/tls.crt", "key": "/etc/edge/shop/tls.key"}]}},
            ],
            "routes": [{"to": "productpage"}],
        },
    ]


def test_gateway_pods_take_outside_clients_to_productpage_pods(gateway_cluster):
    from harness.gatewaypod import https_get

    c = gateway_cluster
    result = c.build(_docs(c))
    assert result.ok, [d.render() for d in result.diagnostics]
    c.write_certs()
    secrets = c.write_edge_certs()
    assert sorted(secrets) == ["ingress-tls-shop.example.com"]
    c.run_pods([("productpage", "v1", 2), ("productpage", "v2", 1)])
    t0 = time.monotonic()
    gateways = c.run_gateway("ingress")  # 2 replicas (the default), each ready by its probe from the node
    ready_s = time.monotonic() - t0
    assert len(gateways) == 2
    for gw in gateways:
        c.wait_routable(gw, "productpage")
        proc = gw.envoy.process()
        assert proc["uid"] == 101 and proc["cap_eff"] == 0  # ports 80/443 bound without a capability
        assert proc["mounts"]["/etc/edge/shop"] == "ro" and proc["mounts"]["/etc/meshc/certs"] == "ro"

    client_ip = c.gateway  # the node's address: the client, as the load balancer hands it over (no SNAT)
    by_pod: dict[str, int] = {}
    by_gateway: dict[str, int] = {}
    statuses: dict[int, int] = {}
    forwarded = set()
    for i in range(120):
        gw = gateways[i % 2]
        status, body, peer = https_get(c.node, gw.ip, 443, "/shop", sni=SNI, cafile=c.edge_ca,
                                       headers={"X-Forwarded-For": "203.0.113.9"})
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            by_pod[body["pod"]] = by_pod.get(body["pod"], 0) + 1
            by_gateway[gw.name] = by_gateway.get(gw.name, 0) + 1
            headers = {k.lower(): v for k, v in body["headers"].items()}
            forwarded.add(headers.get("x-forwarded-for", ""))
            assert body["service"] == "productpage" and body["path"] == "/shop"
    assert statuses == {200: 120}, statuses
    assert by_gateway == {"ingress-0": 60, "ingress-1": 60}
    assert sorted(by_pod) == ["productpage-v1-0", "productpage-v1-1", "productpage-v2-0"], by_pod
    assert ("DNS", SNI) in peer["subjectAltName"]  # the certificate from the Secret, verified for its name
    # trusted_hops 0: the client's own X-Forwarded-For decides nothing; Envoy appends the real peer address
    assert all(f.split(",")[-1].strip() == client_ip for f in forwarded), forwarded

    plain = [http_get(c.node, gw.ip, 80, "/plain", headers={"Host": SNI})[0] for gw in gateways]
    assert plain == [200, 200]

    # The edge certificate renewed in its Secret: kubelet swaps the projected folder's ..data link,
    # Envoy (watching /etc/edge/shop through file SDS) serves the new one without a restart.
    pids = [gw.envoy.pid for gw in gateways]
    before = https_get(c.node, gateways[0].ip, 443, "/", sni=SNI, cafile=c.edge_ca)[2]["serialNumber"]
    c.write_edge_certs()
    t1 = time.monotonic()
    assert sorted(c.sync_volumes()) == ["ingress-0", "ingress-1"]
    for gw in gateways:
        wait_until(lambda g=gw: https_get(c.node, g.ip, 443, "/", sni=SNI, cafile=c.edge_ca)[2]["serialNumber"]
                   != before, 10, message=f"{gw.name} serving the renewed certificate")
    renewed_s = time.monotonic() - t1
    assert [gw.envoy.pid for gw in gateways] == pids
    report("gateway in pods", gateway_pods_ready_s=ready_s, requests=120, ok=statuses.get(200, 0),
           by_gateway=by_gateway, by_pod=by_pod, client=client_ip, forwarded=sorted(forwarded),
           renewed_s=renewed_s)
