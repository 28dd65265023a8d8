"""A gateway in pods in out/kubernetes/: its ConfigMap, ServiceAccount, Deployment, LoadBalancer Service and
PodDisruptionBudget, rendered by the real kustomize (no network) and validated against the Kubernetes API
schemas (1.31 and 1.30, as tests/test_kubernetes_manifests.py does for sidecars). No cluster.

What matters, each asserted against the gateway's own rendered Envoy files where they meet:
- the Deployment's, Service's and PodDisruptionBudget's selectors are the pods' labels;
- the Service has one port per listener (port = targetPort = listener port, named after it), type
  LoadBalancer, externalTrafficPolicy Local; the container declares the same ports;
- every file the gateway's Envoy reads (its config folder, mesh certificates, each edge certificate, key
  and client CA named in its sds-*.yaml) is in a mounted volume, under the file name Envoy opens;
- the probes ask the readiness listener of the gateway's listeners.yaml (`/ready`, the probe port);
- `meshc.dev/bootstrap-sha256` is the sha256 of its bootstrap.yaml: a routes change keeps it (the
  ConfigMap reloads in place), a bootstrap change changes it (pods roll);
- a gateway with a specific address gets nothing; a gateway alone in pods gets the output;
- the checks for gateways in pods (E291, E292, E401, E403, E404, E405, E406) say where: in
  tests/test_kubernetes_gateway_checks.py.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path

import pytest
import yaml

from compiler.kubernetes import layout
from compiler.kubernetes.gateway import CONTAINER, DRAIN_TIME_S
from harness.kustomize import VERSIONS, build_files, build_policy, find, render, validate


POLICY = """\
kind: Mesh
name: shop
mtls: {mode: strict}
observability:
  metrics: {port: 15090}
---
kind: Service
name: productpage
namespace: shop
port: 9080
app_port: 9081
versions: {v1: {}, v2: {}}
---
kind: Route
service: productpage
rules:
  - to: {v1: 90, v2: 10}
---
kind: AuthorizationPolicy
service: productpage
allow:
  - from: [ingress]
---
kind: Gateway
name: ingress
namespace: edge
service_account: edge-gateway
replicas: 3
listeners:
  - name: http
    port: 80
    redirect_to_https: true
  - name: https
    port: 443
    protocol: https
    tls:
      certificates:
        - hosts: [shop.example.com]
          cert: /etc/edge/shop/tls.crt
          key: /etc/edge/shop/tls.key
        - hosts: ["*.api.example.com", api.example.com]
          cert: /etc/edge/api/cert.pem
          key: /etc/edge/api/key.pem
  - name: partners
    port: 8443
    protocol: https
    tls:
      client_ca: /etc/edge/partners-ca/ca.pem
      certificates:
        - hosts: [shop.example.com]
          cert: /etc/edge/shop/tls.crt
          key: /etc/edge/shop/tls.key
routes:
  - to: productpage
"""

DEPLOYMENTS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: productpage-v1
  namespace: shop
  labels: {app: productpage, version: v1}
spec:
  selector:
    matchLabels: {app: productpage, version: v1}
  template:
    metadata:
      labels: {app: productpage, version: v1}
    spec:
      containers:
      - name: app
        image: example.com/productpage:1
"""


def _build(tmp_path: Path, text: str = POLICY, name: str = "policy") -> dict[str, bytes]:
    return build_files(tmp_path, text, name)


def _kustomize(tmp_path: Path, files: dict[str, bytes], deployments: str = DEPLOYMENTS) -> list[dict]:
    return render(tmp_path, files, deployments)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[dict[str, bytes], list[dict]]:
    tmp = tmp_path_factory.mktemp("gw")
    files = _build(tmp)
    return files, _kustomize(tmp, files)


def _find(objects: list[dict], kind: str, name: str, namespace: str = "edge") -> dict:
    return find(objects, kind, name, namespace)


def _gateway_container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["name"] == CONTAINER
    return c


def _json_files(files: dict[str, bytes], folder: str, prefix: str) -> dict[str, dict]:
    return {rel: json.loads(data) for rel, data in files.items()
            if rel.startswith(f"{folder}/{prefix}") and rel.count("/") == 1}


# --------------------------------------------------------------------------
# Layout, schemas
# --------------------------------------------------------------------------


def test_layout_and_every_object_passes_kubernetes_validate(rendered) -> None:
    files, objects = rendered
    ours = sorted(rel for rel in files if rel.startswith("kubernetes/ingress/"))
    assert ours == ["kubernetes/ingress/configmap.yaml", "kubernetes/ingress/gateway.yaml"]
    base = yaml.safe_load(files[layout.BASE])
    assert {"ingress/configmap.yaml", "ingress/gateway.yaml"} <= set(base["resources"])
    component = yaml.safe_load(files[layout.COMPONENT])
    assert [p["target"]["labelSelector"] for p in component["patches"]] == ["app=productpage"]  # no patch for it
    gateway_objects = [(o["kind"], o["metadata"]["name"]) for o in objects if o["metadata"].get("namespace") == "edge"]
    assert sorted(gateway_objects) == [("ConfigMap", "meshc-ingress"), ("Deployment", "ingress"),
                                       ("PodDisruptionBudget", "ingress"), ("Service", "ingress"),
                                       ("ServiceAccount", "edge-gateway")]
    validate(objects)  # raises ValidationError
    assert all("&id" not in files[rel].decode() for rel in ours)  # plain YAML, no anchors


def test_configmap_holds_the_gateway_files_byte_for_byte(rendered) -> None:
    files, objects = rendered
    cm = _find(objects, "ConfigMap", "meshc-ingress")
    expected = {rel.split("/", 1)[1]: data for rel, data in files.items() if rel.startswith("ingress/")}
    assert {k: v.encode() for k, v in cm["data"].items()} == expected
    assert "routes-edge-https.yaml" in cm["data"] and "bootstrap.yaml" in cm["data"]


# --------------------------------------------------------------------------
# Deployment, Service, PodDisruptionBudget, ServiceAccount
# --------------------------------------------------------------------------


def test_selectors_and_labels_meet(rendered) -> None:
    _, objects = rendered
    d = _find(objects, "Deployment", "ingress")
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    selector = d["spec"]["selector"]["matchLabels"]
    assert selector == {"app": "ingress", "meshc.dev/gateway": "ingress"}
    assert selector.items() <= pod_labels.items()
    assert _find(objects, "Service", "ingress")["spec"]["selector"] == selector
    pdb = _find(objects, "PodDisruptionBudget", "ingress")["spec"]
    assert pdb["selector"]["matchLabels"] == selector and pdb["minAvailable"] == 1
    for spread in d["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert spread["labelSelector"]["matchLabels"] == selector
    assert {s["topologyKey"] for s in d["spec"]["template"]["spec"]["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    # the sidecar Component's patches leave the gateway alone: Envoy is its only container
    assert "initContainers" not in d["spec"]["template"]["spec"]
    # the productpage Deployment still gets its sidecar (the overlay is the README's)
    pp = _find(objects, "Deployment", "productpage-v1", "shop")["spec"]["template"]["spec"]
    assert [c["name"] for c in pp["initContainers"]] == [layout.CONTAINER]


def test_deployment_runs_envoy_as_sidecars_do(rendered) -> None:
    files, objects = rendered
    d = _find(objects, "Deployment", "ingress")
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    spec = d["spec"]["template"]["spec"]
    c = _gateway_container(d)
    assert c["image"] == "envoyproxy/envoy:v1.40.0" and c["command"] == ["/usr/local/bin/envoy"]
    assert c["args"] == ["-c", "/etc/meshc/bootstrap.yaml", "--drain-strategy", "immediate",
                         "--drain-time-s", "5", "--disable-hot-restart"]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
        "runAsGroup": 101, "runAsNonRoot": True, "runAsUser": 101, "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    # ports 80 and 443 without a capability: the pod's safe sysctl
    assert spec["securityContext"] == {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
    assert spec["terminationGracePeriodSeconds"] == 20
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 20 - DRAIN_TIME_S}}}
    assert spec["serviceAccountName"] == "edge-gateway" and spec["automountServiceAccountToken"] is False
    sa = _find(objects, "ServiceAccount", "edge-gateway")
    assert sa["automountServiceAccountToken"] is False
    # the account is the identity the gateway presents to the mesh (and productpage allows)
    assert "spiffe://cluster.local/ns/edge/sa/edge-gateway" in files["ingress/bootstrap.yaml"].decode() + \
        files["ingress/clusters.yaml"].decode() + files["productpage/listeners.yaml"].decode()
    annotations = d["spec"]["template"]["metadata"]["annotations"]
    assert annotations[layout.ANNOTATION_BOOTSTRAP] == hashlib.sha256(files["ingress/bootstrap.yaml"]).hexdigest()
    assert annotations["prometheus.io/port"] == "15090" and annotations["prometheus.io/scrape"] == "true"


def test_load_balancer_service_exposes_each_listener(rendered) -> None:
    files, objects = rendered
    svc = _find(objects, "Service", "ingress")["spec"]
    assert svc["type"] == "LoadBalancer" and svc["externalTrafficPolicy"] == "Local"
    assert svc["ports"] == [
        {"name": "http", "appProtocol": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
        {"name": "https", "appProtocol": "https", "port": 443, "targetPort": 443, "protocol": "TCP"},
        {"name": "partners", "appProtocol": "https", "port": 8443, "targetPort": 8443, "protocol": "TCP"},
    ]
    c = _gateway_container(_find(objects, "Deployment", "ingress"))
    declared = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert declared == {"http": 80, "https": 443, "partners": 8443, "meshc-metrics": 15090, "meshc-probe": 15021}
    # each port is one the gateway's Envoy listens on, on every interface of the pod
    listeners = json.loads(files["ingress/listeners.yaml"])["resources"]
    bound = {l["address"]["socket_address"]["port_value"]: l["address"]["socket_address"]["address"] for l in listeners}
    for port in declared.values():
        assert bound[port] == "0.0.0.0", (port, bound)


def test_probes_ask_the_readiness_listener(rendered) -> None:
    files, objects = rendered
    c = _gateway_container(_find(objects, "Deployment", "ingress"))
    listeners = json.loads(files["ingress/listeners.yaml"])["resources"]
    (ready,) = [l for l in listeners if l["name"] == "readiness"]
    port = ready["address"]["socket_address"]["port_value"]
    hcm = ready["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert route["match"] == {"path": "/ready"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/ready", "port": port, "scheme": "HTTP"}


def test_every_file_envoy_reads_is_mounted_under_its_name(rendered) -> None:
    files, objects = rendered
    spec = _find(objects, "Deployment", "ingress")["spec"]["template"]["spec"]
    c = _gateway_container(_find(objects, "Deployment", "ingress"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    at = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    assert all(m.get("readOnly") for m in c["volumeMounts"] if "emptyDir" not in volumes[m["name"]])
    assert at["/etc/meshc"]["configMap"] == {"name": "meshc-ingress"}
    assert at["/etc/meshc/certs"]["secret"] == {"secretName": "meshc-certs-ingress"}
    assert "emptyDir" in at["/tmp"]

    def provided(path: str) -> tuple[str, str]:
        """(Secret, key) that lands at `path` in the pod."""
        volume = at[posixpath.dirname(path)]
        hits = [(s["secret"]["name"], item["key"]) for s in volume["projected"]["sources"]
                for item in s["secret"]["items"] if item["path"] == posixpath.basename(path)]
        assert len(hits) == 1, (path, hits)
        return hits[0]

    # Every file named in the gateway's edge SDS files: what Envoy opens (and the folder it watches).
    opened = set()
    for rel, doc in _json_files(files, "ingress", "sds-edge-").items():
        for secret in doc["resources"]:
            if "tls_certificate" in secret:
                tc = secret["tls_certificate"]
                paths = [tc["certificate_chain"]["filename"], tc["private_key"]["filename"]]
            else:
                tc = secret["validation_context"]
                paths = [tc["trusted_ca"]["filename"]]
            opened.update(paths)
            assert {posixpath.dirname(p) for p in paths} == {tc["watched_directory"]["path"]}
            assert tc["watched_directory"]["path"] in at  # the folder Envoy watches is the volume kubelet swaps
    assert {path: provided(path) for path in opened} == {
        "/etc/edge/shop/tls.crt": ("ingress-tls-shop.example.com", "tls.crt"),
        "/etc/edge/shop/tls.key": ("ingress-tls-shop.example.com", "tls.key"),
        "/etc/edge/api/cert.pem": ("ingress-tls-wildcard.api.example.com", "tls.crt"),
        "/etc/edge/api/key.pem": ("ingress-tls-wildcard.api.example.com", "tls.key"),
        "/etc/edge/partners-ca/ca.pem": ("ingress-client-ca-partners", "ca.crt"),
    }
    # the shop certificate served on two listeners is one Secret; one volume per folder
    assert sorted(m["mountPath"] for m in c["volumeMounts"]) == [
        "/etc/edge/api", "/etc/edge/partners-ca", "/etc/edge/shop", "/etc/meshc", "/etc/meshc/certs", "/tmp"]
    # mesh certificates: what the gateway's SDS for its identity reads
    identity = json.loads(files["ingress/sds-identity.yaml"])["resources"][0]["tls_certificate"]
    assert posixpath.dirname(identity["certificate_chain"]["filename"]) == "/etc/meshc/certs"


# --------------------------------------------------------------------------
# What rolls pods; replicas; where nothing is written
# --------------------------------------------------------------------------


def _gateway_docs(files: dict[str, bytes]) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(files["kubernetes/ingress/gateway.yaml"])}


def _annotation(files: dict[str, bytes]) -> str:
    return _gateway_docs(files)["Deployment"]["spec"]["template"]["metadata"]["annotations"][layout.ANNOTATION_BOOTSTRAP]


def test_only_a_bootstrap_change_rolls_the_gateway_pods(tmp_path: Path) -> None:
    base = _build(tmp_path, name="base")
    routes = _build(tmp_path, POLICY.replace("{v1: 90, v2: 10}", "{v1: 50, v2: 50}"), name="routes")
    changed = sorted(rel for rel in base if base[rel] != routes.get(rel) and rel != "sourcemap.json")
    # the gateway routes with productpage's own Route: its routes file changes, in its ConfigMap, in place
    assert "ingress/routes-edge-https.yaml" in changed and "kubernetes/ingress/configmap.yaml" in changed
    assert "ingress/bootstrap.yaml" not in changed and "kubernetes/ingress/gateway.yaml" not in changed
    assert _annotation(base) == _annotation(routes)

    boot = _build(tmp_path, POLICY.replace("{port: 15090}", "{port: 15090, keep_prefixes: [cluster.]}"), name="boot")
    assert base["ingress/bootstrap.yaml"] != boot["ingress/bootstrap.yaml"]
    assert _annotation(boot) == hashlib.sha256(boot["ingress/bootstrap.yaml"]).hexdigest() != _annotation(base)


def test_replicas_and_disruption_budget(tmp_path: Path) -> None:
    one = _gateway_docs(_build(tmp_path, POLICY.replace("replicas: 3", "replicas: 1"), name="one"))
    assert one["Deployment"]["spec"]["replicas"] == 1
    assert "PodDisruptionBudget" not in one  # minAvailable 1 of 1 would block every node drain
    default = _gateway_docs(_build(tmp_path, POLICY.replace("replicas: 3\n", ""), name="default"))
    assert default["Deployment"]["spec"]["replicas"] == 2 and default["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def test_high_ports_need_no_sysctl_and_no_mtls_no_certificate_volume(tmp_path: Path) -> None:
    text = (POLICY.replace("port: 80\n", "port: 8080\n").replace("port: 443\n", "port: 8443\n")
            .replace("port: 8443\n    protocol: https\n    tls:\n      client_ca", "port: 9443\n    protocol: https\n    tls:\n      client_ca")
            .replace("mtls: {mode: strict}", "mtls: {mode: disable}").replace("  - from: [ingress]\n", "  - methods: [GET]\n"))
    docs = _gateway_docs(_build(tmp_path, text))
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    assert "securityContext" not in spec
    assert "meshc-certs" not in {v["name"] for v in spec["volumes"]}
    assert [p["port"] for p in docs["Service"]["spec"]["ports"]] == [8080, 8443, 9443]


def test_a_gateway_on_a_specific_address_gets_nothing(tmp_path: Path) -> None:
    text = POLICY.replace("namespace: edge\n", "namespace: edge\naddress: 10.0.0.7\n").replace("replicas: 3\n", "")
    files = _build(tmp_path, text)  # (replicas on it would be refused: nothing would read them)
    assert "ingress/bootstrap.yaml" in files  # built, for its host
    assert not any(rel.startswith("kubernetes/ingress/") for rel in files)
    assert any(rel.startswith("kubernetes/productpage/") for rel in files)  # the services in pods still are


def test_a_gateway_alone_in_pods_gets_the_output(tmp_path: Path) -> None:
    text = POLICY.replace("app_port: 9081\n", "app_port: 9081\nsidecar: {address: 10.0.0.8}\n")
    files = _build(tmp_path, text)
    assert not any(rel.startswith("kubernetes/productpage/") for rel in files)
    assert {"kubernetes/ingress/configmap.yaml", "kubernetes/ingress/gateway.yaml", layout.BASE} <= set(files)
    objects = _kustomize(tmp_path, files, deployments="")
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service",
                                                  "ServiceAccount"]
    validate(objects, VERSIONS[:1])


def test_file_access_log_gets_a_writable_folder_and_a_big_configmap_is_refused(tmp_path: Path) -> None:
    from compiler.kubernetes.problems import CONFIGMAP_LIMIT, problems

    text = POLICY.replace("replicas: 3\n", "replicas: 3\nobservability:\n  access_log: {to: file, path: /var/log/edge/access.log}\n")
    result = build_policy(tmp_path, text, "p")
    assert result.ok, [d.render() for d in result.diagnostics]
    c = _gateway_docs(result.files)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/var/log/edge"]["name"] == layout.VOLUME_LOGS and "readOnly" not in mounts["/var/log/edge"]
    assert '"/var/log/edge/access.log"' in result.files["ingress/listeners.yaml"].decode()
    (too_big,) = problems(result.ir, {"ingress": CONFIGMAP_LIMIT + 1})
    assert too_big.code == "E402" and too_big.subject == "Gateway 'ingress'" and "meshc-ingress" in too_big.message
