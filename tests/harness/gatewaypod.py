"""A gateway in the cluster in a box: pods of the Deployment meshc writes in `kubernetes/<gateway>/gateway.yaml`.

    cluster = GatewayCluster(tmp_path, binary=envoy).start()   # a KubeCluster that also runs gateway pods
    cluster.build(docs); cluster.write_certs(); cluster.write_edge_certs()
    cluster.run_pods([("productpage", "v1", 2)])
    pods = cluster.run_gateway("ingress")                     # `replicas` pods, ready, as kubelet runs them
    status, body, peer = https_get(client_netns, pod.ip, 443, "/", sni="shop.example.com", cafile=...)

What is real, beyond harness.cluster: the gateway's container as the Deployment describes it (command,
args, user, read-only root, volume mounts and their sources, the pod's sysctls, preStop, grace, readiness
probe), its labels and namespace, and the edge TLS Secrets projected into the folders the policy names
under the Secret volume items' paths (kubelet's `..data` swap). The box's Secret store holds, per Secret
name, the development certificates `compiler.certs.write_edge_certs` makes for the gateway.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import yaml

from compiler import certs
from compiler.load import load
from compiler.policy.edge_secrets import CA_CERT, TLS_CERT, TLS_KEY

from . import netns as ns
from .cluster import KubeCluster
from .configmap import project
from .manifests import Mount, SidecarSpec
from .pod import Pod
from .util import READY_TIMEOUT, HarnessError, wait_until

CONTAINER = "meshc-gateway"


def gateway_objects(out: Path, gateway: str) -> dict[str, dict]:
    """Kind -> object of `kubernetes/<gateway>/gateway.yaml`."""
    path = Path(out) / "kubernetes" / gateway / "gateway.yaml"
    if not path.is_file():
        raise HarnessError(f"no {path}: the gateway does not run in pods")
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def gateway_spec(out: Path, gateway: str) -> tuple[SidecarSpec, dict]:
    """The gateway container of its Deployment as a SidecarSpec, and the Deployment."""
    d = gateway_objects(out, gateway)["Deployment"]
    template = d["spec"]["template"]
    pod = template["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == CONTAINER]
    volumes = {v["name"]: {k: val for k, val in v.items() if k != "name"} for v in pod.get("volumes", [])}
    mounts = [Mount(m["name"], m["mountPath"], bool(m.get("readOnly")), volumes[m["name"]]) for m in c["volumeMounts"]]
    sc = c.get("securityContext") or {}
    probe = c["readinessProbe"]["httpGet"]
    spec = SidecarSpec(
        command=list(c["command"]),
        args=list(c["args"]),
        mounts=mounts,
        run_as=(int(sc["runAsUser"]), int(sc.get("runAsGroup", sc["runAsUser"]))) if "runAsUser" in sc else None,
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        pre_stop_sleep=float(c["lifecycle"]["preStop"]["sleep"]["seconds"]),
        grace=float(pod.get("terminationGracePeriodSeconds", 30)),
        readiness=(probe["path"], int(probe["port"])),
        annotations=dict(template["metadata"].get("annotations") or {}),
        sysctls={x["name"]: str(x["value"]) for x in (pod.get("securityContext") or {}).get("sysctls", [])},
    )
    return spec, d


class GatewayCluster(KubeCluster):
    """KubeCluster that also runs gateway pods, and knows projected volumes of Secrets."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.secrets: dict[str, dict[str, bytes]] = {}  # the box's Secret store: name -> key -> bytes
        self.namespace_of: dict[str, str] = {}  # pod name -> namespace, for gateway pods

    def write_edge_certs(self) -> dict[str, dict[str, bytes]]:
        """Development certificates for every gateway in pods (compiler.certs), stored as the Secrets its
        Deployment projects (names and keys from the IR's KubernetesGateway)."""
        for s in self.last_build.ir.sidecars:
            if s.gateway is None or s.gateway.kubernetes is None:
                continue
            model = next(g for g in load(self.policy_dir).policy.gateways if g.name == s.gateway.name)
            by_path: dict[str, bytes] = {}
            for folder, spec in certs.write_edge_certs(self.certs_root / "edge", s.tls.trust_domain, model):
                for what, path in spec.paths.items():
                    by_path[path] = (folder / spec.files[what]).read_bytes()
            for secret in s.gateway.kubernetes.edge_secrets:
                assert {k for k, _ in secret.files} <= {TLS_CERT, TLS_KEY, CA_CERT}, secret
                self.secrets[secret.name] = {key: by_path[path] for key, path in secret.files}
        return self.secrets

    @property
    def edge_ca(self) -> Path:
        """The development CA that signed the edge certificates (what a client trusts)."""
        return self.certs_root / "edge" / "ca.pem"

    def run_gateway(self, gateway: str, timeout: float = READY_TIMEOUT) -> list[Pod]:
        """Start the Deployment's `replicas` pods, wait until each passes its readiness probe."""
        spec, deployment = gateway_spec(self.out, gateway)
        labels = dict(deployment["spec"]["template"]["metadata"]["labels"])
        namespace = deployment["metadata"]["namespace"]
        pods = [self._make_gateway_pod(gateway, namespace, labels, spec) for _ in range(deployment["spec"]["replicas"])]
        for pod in pods:
            pod.envoy.launch()
        deadline = time.monotonic() + timeout
        for pod in pods:
            pod.envoy.wait_live(deadline)
            wait_until(lambda p=pod: p.ready(self.node), max(0.1, deadline - time.monotonic()),
                       message=f"readiness probe of {pod.name}")
            pod.published = True
        self.publish()
        return pods

    def _make_gateway_pod(self, gateway: str, namespace: str, labels: dict, spec: SidecarSpec) -> Pod:
        index = sum(1 for p in self.pods if p.startswith(f"{gateway}-"))
        self.namespace_of[f"{gateway}-{index}"] = namespace
        pod = self._plug_pod(f"{gateway}-{index}", gateway, "gateway", None)
        pod.labels = labels
        self._start_envoy(pod, spec)
        return pod

    def _resolver(self, pod: Pod) -> None:
        if pod.name not in self.namespace_of:
            return super()._resolver(pod)
        domain = self.cluster_domain()
        etc = ns.ETC_NETNS / pod.netns
        etc.mkdir(parents=True, exist_ok=True)
        namespace = self.namespace_of[pod.name]
        (etc / "resolv.conf").write_text(
            f"search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {self.gateway}\noptions ndots:5\n"
        )
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{pod.ip}\t{pod.name}\n")

    def _project(self, pod: Pod, m: Mount, host: Path) -> bool:
        if m.kind != "projected" or not all("secret" in source for source in m.source["projected"]["sources"]):
            return super()._project(pod, m, host)  # (a projected volume of ConfigMaps: external CA bundles)
        payload: dict[str, bytes] = {}
        for source in m.source["projected"]["sources"]:
            name = source["secret"]["name"]
            if name not in self.secrets:
                raise HarnessError(f"{pod.name}: no Secret '{name}' in the box (call write_edge_certs())")
            for item in source["secret"]["items"]:
                payload[item["path"]] = self.secrets[name][item["key"]]
        return project(host, payload, mode=m.source["projected"].get("defaultMode", 0o644))


def https_get(netns: str, ip: str, port: int, path: str, *, sni: str, cafile: Path,
              headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict, dict]:
    """One HTTPS/1.1 request from inside `netns` to `ip:port` with SNI `sni`, verifying the server's certificate
    against `cafile` for that name: (status, JSON body or {}, the peer certificate as ssl reports it)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    raw = ns.socket_in(netns)
    raw.settimeout(timeout)
    raw.connect((ip, port))
    with ctx.wrap_socket(raw, server_hostname=sni) as tls:
        lines = [f"GET {path} HTTP/1.1", f"Host: {sni}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            try:
                chunk = tls.recv(65536)
            except (socket.timeout, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
        peer = tls.getpeercert()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {}
    return status, parsed, peer


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    return out
