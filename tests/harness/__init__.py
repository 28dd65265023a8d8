"""Live-Envoy test harness: real sidecars, real upstream apps, loopback only.

Everything here talks to 127.0.0.0/8 and nothing else. Every wait is bounded
(a deadline and a poll interval, never a fixed sleep that "should be enough"),
and everything that is started is stopped again by its owner (`LiveMesh.close`,
called by the `live_mesh` fixture in conftest.py).

Building blocks (usable on their own), by module:

- util      `HarnessError`, `wait_until` (bounded polling), `report` (print figures), `envoy_binary`,
            `Loopback` (fresh loopback addresses 127.a.b.c and free ports on
            them), and the timeouts (READY_, STOP_, REQUEST_TIMEOUT, POLL_INTERVAL).
- upstream  `Upstream`: a threaded HTTP app that answers every method with JSON
            `{"service", "version", "instance", "method", "path", "headers"}`,
            records every request (`RecordedRequest`), and has behaviour knobs
            (`status`, `delay`, `script`, `handler` returning a `Reply`).
- client    `send_many` -> [`Response`]: a tiny http.client wrapper.
- load      `SteadyLoad` of `Stream`s: bounded background traffic through callers' sidecars, every
            outcome recorded (`Sample`) to judge a policy switch by what the traffic saw.
- policy    `policy_yaml`, `write_policy`, `compile_policy`: policy documents ->
            files -> `OUT/`; `load_json_yaml`, `resource_names` to read `OUT/`.
- sidecar   `EnvoySidecar`: one `envoy` process for `OUT/<service>/bootstrap.yaml`,
            with readiness, admin helpers (stats, clusters, config_dump,
            server_info) and a check that file-based xDS updates were accepted.
- mesh      `LiveMesh`: all of the above for one test, in one temporary directory.
- gateway   `GatewayEnvoy` / `start_gateway` (a Gateway's Envoy, `OUT/<gateway>/`), `tls_context`,
            `https_many` (HTTPS with SNI, CA bundle, client certificate, source address), `handshake`.
- edge_mesh `edge_mesh`: the gateway tests' mesh (productpage behind `ingress`, certificates issued), `Signer`.
- agreement `Case`, `send`, `disagreement`, `generate`: requests through real sidecars compared with `meshc explain`;
            agreement_mesh: the agreement test's mesh (every decision explain makes) and its one-decision mutants.

The cluster in a box (Kubernetes mode; Linux, root, `ip`, `dnsmasq`; the `kube_cluster` fixture). These
leave loopback, but only inside network namespaces the harness makes, in a private /24 with no uplink:

- cluster     `KubeCluster`: node namespace with a bridge, cluster DNS, pods, kubelet's volume updates and
              termination, the endpoints controller; teardown of everything.
- netns       namespaces, veth, `socket_in` (a socket opened inside a namespace), a tiny DNS client.
- clusterdns  `ClusterDNS`: dnsmasq serving the Services' names, SIGHUP on change.
- configmap   kubelet's `..data` swap (`project`) and a sidecar's ConfigMap data.
- manifests   what the box reads from out/kubernetes: Services, the sidecar Component's container.
- pod         `Pod`, `PodEnvoy` (the sidecar as the Component says, in the pod's namespaces).
- podenv      kubelet's resolution of a container's `env` for a pod (values, downward API `fieldRef`).
- podapp      the app inside a pod (`python -m harness.podapp`).
- podload, traffic  the load client inside a caller pod and its samples (`PodLoad`, `tally`, `failures`).

Without a cluster: kustomize  the manifest tests' rendering of out/kubernetes/ (build, the README's overlay
through kubectl's kustomize offline, kubernetes-validate for the stated versions).
"""

from .client import Response, raw_exchange, send_many
from .load import Sample, SteadyLoad, Stream
from .mesh import LiveMesh
from .policy import compile_policy, load_json_yaml, policy_yaml, resource_names, write_policy
from .sidecar import EnvoySidecar
from .upstream import RecordedRequest, Reply, Upstream
from .util import HarnessError, Loopback, envoy_binary, report, wait_until

__all__ = [
    "EnvoySidecar",
    "HarnessError",
    "LiveMesh",
    "Loopback",
    "RecordedRequest",
    "Sample",
    "SteadyLoad",
    "Stream",
    "Reply",
    "Response",
    "Upstream",
    "compile_policy",
    "envoy_binary",
    "load_json_yaml",
    "policy_yaml",
    "resource_names",
    "send_many",
    "raw_exchange",
    "report",
    "wait_until",
    "write_policy",
]
