"""out/kubernetes/: the kustomize base and sidecar Component, rendered by the real kustomize, validated
against the Kubernetes API schemas. No cluster (the live tests of the cluster in a box run the sidecars).

- `kubectl kustomize` (kustomize built into kubectl) renders an overlay that uses the base and the
  Component with sample Deployments, with no network at all (in a network namespace of its own when
  the test can make one): the Deployments get the sidecar, volumes and annotations, and keep their own
  containers; the ConfigMaps hold the sidecar files byte for byte; the Services follow the contract.
- Every rendered object passes kubernetes-validate --strict for Kubernetes 1.31 (the version the
  README states) and 1.30 (the oldest the output is meant for: native sidecars and the preStop `sleep`
  action are on by default from there).
- A bootstrap change changes the pod annotation (pods roll); a routes-only change does not (the
  ConfigMap changes and running sidecars reload it in place).
- Two builds are byte-identical, whatever the hash seed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate  # test extra (pyproject.toml)
import pytest
import yaml

from compiler.build import build
from harness.kustomize import VERSIONS, build_files, find, kustomize, render, validate, write_out
from compiler.kubernetes import layout, manifests
from compiler.kubernetes.problems import CONFIGMAP_LIMIT, problems
from compiler.rollout import KUBERNETES_BASE

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = VERSIONS[0]  # stated in the README ("Kubernetes output")

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
calls: [reviews, db, ratings]
---
kind: Service
name: reviews
namespace: shop
port: 9080
app_port: 9081
versions:
  v1: {}
  v2: {}
  legacy: {endpoints: ["legacy.example.com:8080"]}
---
kind: Service
name: ratings
namespace: shop
protocol: grpc
port: 9090
app_port: 9091
observability:
  access_log: {to: file, path: /var/log/meshc/access.log}
---
kind: Service
name: db
namespace: data
protocol: tcp
port: 5432
app_port: 5433
---
kind: Route
service: reviews
rules:
  - to: {v1: 90, v2: 10}
"""

DEPLOYMENTS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  namespace: shop
  labels: {app: reviews, version: v1}
spec:
  replicas: 2
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      labels: {app: reviews, version: v1}
    spec:
      containers:
      - name: app
        image: example.com/reviews:1
        ports: [{containerPort: 9081}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v2
  namespace: shop
  labels: {app: reviews, version: v2}
spec:
  selector:
    matchLabels: {app: reviews, version: v2}
  template:
    metadata:
      labels: {app: reviews, version: v2}
      annotations: {team: books}
    spec:
      initContainers:
      - name: migrate
        image: example.com/migrate:1
      containers:
      - name: app
        image: example.com/reviews:2
      volumes:
      - name: data
        emptyDir: {}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example.com/web:1
"""


def _build(tmp_path: Path, text: str = POLICY, name: str = "policy") -> dict[str, bytes]:
    return build_files(tmp_path, text, name)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[dict[str, bytes], list[dict]]:
    tmp = tmp_path_factory.mktemp("k8s")
    files = _build(tmp)
    return files, render(tmp, files, DEPLOYMENTS)


def _sidecar_container(deployment: dict) -> dict:
    (c,) = [c for c in deployment["spec"]["template"]["spec"].get("initContainers", []) if c["name"] == layout.CONTAINER]
    return c


# --------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------


def test_layout_only_services_in_pods(tmp_path: Path) -> None:
    files = _build(tmp_path)
    ours = sorted(rel for rel in files if rel.startswith("kubernetes/"))
    assert ours == sorted(
        ["kubernetes/kustomization.yaml", "kubernetes/sidecar/kustomization.yaml"]
        + [f"kubernetes/{s}/{f}" for s in ("db", "productpage", "ratings", "reviews") for f in ("configmap.yaml", "services.yaml")]
        + [f"kubernetes/sidecar/patch-{s}.yaml" for s in ("db", "productpage", "ratings", "reviews")]
    )
    base = yaml.safe_load(files[layout.BASE])
    assert base["resources"] == sorted(base["resources"]) and len(base["resources"]) == 8
    assert all("://" not in r and not r.startswith("/") for r in base["resources"])  # nothing remote
    component = yaml.safe_load(files[layout.COMPONENT])
    assert component["kind"] == "Component"
    assert [p["target"]["labelSelector"] for p in component["patches"]] == [
        "app=db", "app=productpage", "app=ratings", "app=reviews"]

    one_host = build(ROOT / "policies" / "canary")
    assert one_host.ok and not any(rel.startswith("kubernetes/") for rel in one_host.files)


def test_rollout_and_layout_agree_on_the_base() -> None:
    assert KUBERNETES_BASE == layout.BASE


# --------------------------------------------------------------------------
# kustomize
# --------------------------------------------------------------------------


def test_kustomize_adds_the_sidecar_to_the_services_deployments(rendered) -> None:
    files, objects = rendered
    bootstrap_sha = hashlib.sha256(files["reviews/bootstrap.yaml"]).hexdigest()
    for name in ("reviews-v1", "reviews-v2"):
        d = find(objects, "Deployment", name)
        pod = d["spec"]["template"]
        spec = pod["spec"]
        c = _sidecar_container(d)
        assert spec["initContainers"][0]["name"] == layout.CONTAINER  # before the user's init containers
        assert c["restartPolicy"] == "Always" and c["image"] == "envoyproxy/envoy:v1.40.0"
        assert c["args"] == ["-c", "/etc/meshc/bootstrap.yaml", "--drain-strategy", "immediate",
                             "--drain-time-s", "5", "--disable-hot-restart"]
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
            "runAsGroup": 101, "runAsNonRoot": True, "runAsUser": 101, "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
            "meshc-inbound": 9080, "meshc-metrics": 15090, "meshc-probe": 15021}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/ready", "port": 15021, "scheme": "HTTP"}
        # productpage resolves reviews' versions every 5 s: stay 5 s + 5 s margin
        assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 10}}}
        assert spec["terminationGracePeriodSeconds"] == 20
        assert {m["mountPath"]: m["name"] for m in c["volumeMounts"]} == {
            "/etc/meshc": "meshc-config", "/etc/meshc/certs": "meshc-certs", "/tmp": "meshc-tmp"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["meshc-config"]["configMap"] == {"name": "meshc-reviews"}
        assert volumes["meshc-certs"]["secret"] == {"secretName": "meshc-certs-reviews"}
        assert "emptyDir" in volumes["meshc-tmp"]
        assert pod["metadata"]["annotations"][layout.ANNOTATION_BOOTSTRAP] == bootstrap_sha
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == "15090"
        assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/stats/prometheus"
        assert [c["name"] for c in spec["containers"]] == ["app"]  # the user's container is untouched
    v2 = find(objects, "Deployment", "reviews-v2")["spec"]["template"]
    assert [c["name"] for c in v2["spec"]["initContainers"]] == [layout.CONTAINER, "migrate"]
    assert {v["name"] for v in v2["spec"]["volumes"]} == {"data", "meshc-config", "meshc-certs", "meshc-tmp"}
    assert v2["metadata"]["annotations"]["team"] == "books"
    web = find(objects, "Deployment", "web")["spec"]["template"]
    assert "initContainers" not in web["spec"] and "annotations" not in web["metadata"]  # not a meshc service


def test_configmaps_hold_the_sidecar_files_byte_for_byte(rendered) -> None:
    files, objects = rendered
    maps = [o for o in objects if o["kind"] == "ConfigMap"]
    assert sorted(m["metadata"]["name"] for m in maps) == ["meshc-db", "meshc-productpage", "meshc-ratings", "meshc-reviews"]
    for m in maps:
        service = m["metadata"]["name"].removeprefix("meshc-")
        expected = {rel.split("/", 1)[1]: data for rel, data in files.items() if rel.startswith(f"{service}/")}
        assert "binaryData" not in m
        assert {k: v.encode() for k, v in m["data"].items()} == expected
        assert m["metadata"]["namespace"] == ("data" if service == "db" else "shop")


def test_services_per_contract(rendered) -> None:
    _, objects = rendered
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    # reviews' 'legacy' lists its own endpoints: no pods of its own, so no headless Service
    assert sorted(services) == ["db", "db-default", "productpage", "productpage-default", "ratings",
                                "ratings-default", "reviews", "reviews-v1", "reviews-v2"]
    expected = {  # name -> (namespace, selector, headless, port, port name)
        "reviews": ("shop", {"app": "reviews"}, False, 9080, "http"),
        "reviews-v1": ("shop", {"app": "reviews", "version": "v1"}, True, 9080, "http"),
        "reviews-v2": ("shop", {"app": "reviews", "version": "v2"}, True, 9080, "http"),
        "ratings": ("shop", {"app": "ratings"}, False, 9090, "grpc"),
        "ratings-default": ("shop", {"app": "ratings"}, True, 9090, "grpc"),
        "db": ("data", {"app": "db"}, False, 5432, "tcp"),
        "db-default": ("data", {"app": "db"}, True, 5432, "tcp"),
    }
    for name, (ns, selector, headless, port, port_name) in expected.items():
        svc = services[name]
        assert svc["metadata"]["namespace"] == ns
        assert svc["spec"]["selector"] == selector
        assert (svc["spec"].get("clusterIP") == "None") is headless
        assert svc["spec"]["ports"] == [{"name": port_name, "appProtocol": port_name, "port": port,
                                         "targetPort": port, "protocol": "TCP"}]


def test_file_access_log_gets_a_writable_folder(rendered) -> None:
    files, _ = rendered
    patch = yaml.safe_load(files["kubernetes/sidecar/patch-ratings.yaml"])
    c = patch["spec"]["template"]["spec"]["initContainers"][0]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/var/log/meshc"]["name"] == layout.VOLUME_LOGS and "readOnly" not in mounts["/var/log/meshc"]
    reviews = yaml.safe_load(files["kubernetes/sidecar/patch-reviews.yaml"])["spec"]["template"]["spec"]
    assert "/var/log/meshc" not in {m["mountPath"] for m in reviews["initContainers"][0]["volumeMounts"]}


def test_drain_follows_the_callers_dns_refresh(tmp_path: Path) -> None:
    def sleep(files, service):
        patch = yaml.safe_load(files[f"kubernetes/sidecar/patch-{service}.yaml"])
        return patch["spec"]["template"]["spec"]["initContainers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]

    files = _build(tmp_path, POLICY.replace("mtls: {mode: strict}", "mtls: {mode: strict}\nkubernetes: {dns_refresh: 2500ms}"))
    # productpage resolves reviews, ratings and db every 2.5 s: they stay 2.5 s + 5 s, rounded up;
    # nobody resolves productpage by name (only kube-proxy's ClusterIP): the margin alone
    assert {s: sleep(files, s) for s in ("reviews", "ratings", "db", "productpage")} == {
        "reviews": 8, "ratings": 8, "db": 8, "productpage": 5}


def test_every_rendered_object_passes_kubernetes_validate(rendered) -> None:
    _, objects = rendered
    assert len(objects) == 16
    validate(objects)  # raises ValidationError
    broken = find(objects, "Deployment", "reviews-v1")
    broken = yaml.safe_load(yaml.safe_dump(broken).replace("restartPolicy: Always", "restartPolicyy: Always"))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# --------------------------------------------------------------------------
# What rolls pods, determinism, refusals
# --------------------------------------------------------------------------


def _annotation(files: dict[str, bytes], service: str) -> str:
    patch = yaml.safe_load(files[f"kubernetes/sidecar/patch-{service}.yaml"])
    return patch["spec"]["template"]["metadata"]["annotations"][layout.ANNOTATION_BOOTSTRAP]


def test_only_a_bootstrap_change_changes_the_pod_annotation(tmp_path: Path) -> None:
    base = _build(tmp_path, name="base")
    routes = _build(tmp_path, POLICY.replace("{v1: 90, v2: 10}", "{v1: 50, v2: 50}"), name="routes")
    changed = sorted(rel for rel in base if base[rel] != routes.get(rel) and rel != "sourcemap.json")
    assert changed == ["kubernetes/productpage/configmap.yaml", "productpage/routes-outbound.yaml"]
    assert all(_annotation(base, s) == _annotation(routes, s) for s in ("productpage", "reviews"))

    # keep_prefixes is in the bootstrap (stats_config): every sidecar restarts, so every pod rolls
    boot = _build(tmp_path, POLICY.replace("{port: 15090}", "{port: 15090, keep_prefixes: [cluster.]}"), name="boot")
    for service in ("db", "productpage", "ratings", "reviews"):
        assert base[f"{service}/bootstrap.yaml"] != boot[f"{service}/bootstrap.yaml"]
        assert _annotation(base, service) != _annotation(boot, service)
        assert _annotation(boot, service) == hashlib.sha256(boot[f"{service}/bootstrap.yaml"]).hexdigest()


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "mesh.yaml").write_text(POLICY)
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-m", "compiler", "build", str(tmp_path / "p"), "-o", str(out)],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        outs.append({str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "kubernetes").rglob("*")) if p.is_file()})
    assert outs[0] == outs[1] and len(outs[0]) == 14


def test_refusals(tmp_path: Path) -> None:
    files = _build(tmp_path)
    result = build(tmp_path / "policy")
    ir = result.ir
    assert list(problems(ir, {"reviews": CONFIGMAP_LIMIT})) == []
    (too_big,) = problems(ir, {"reviews": CONFIGMAP_LIMIT + 1})
    assert too_big.code == "E402" and "reviews" in too_big.subject
    produced, diags = manifests(ir, files)
    assert diags == [] and set(produced) == {rel for rel in files if rel.startswith("kubernetes/")}


def test_kubectl_reads_configmap_values_exactly(tmp_path: Path) -> None:
    """The literal blocks written directly, and the values that need PyYAML, read back the same in kubectl."""
    from compiler.kubernetes.yaml_out import dumps

    values = {
        "plain.yaml": '{\n  "a": [1, 2],\n  "b": "x: y # z"\n}\n',
        "blank-lines.yaml": "a: 1\n\n\nb: 2\n",
        "indented-first.yaml": "  a: 1\nb: 2\n",
        "trailing-space.yaml": "a: 1 \nb: 2\n",
        "no-newline.yaml": "a: 1",
        "two-newlines.yaml": "a: 1\n\n",
        "tab.yaml": "a:\t1\n",
        "unicode.yaml": "caf\u00e9: \u2028 \U0001F600\n",
        "crlf.yaml": "a: 1\r\nb: 2\r\n",
        "document-end.yaml": "...\n---\n# comment\n",
        "empty.yaml": "",
        "true": "yes\n",
    }
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tricky", "namespace": "x"}, "data": values}
    folder = tmp_path / "cm"
    folder.mkdir()
    (folder / "cm.yaml").write_bytes(dumps(cm))
    (folder / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    (rendered,) = kustomize(folder)
    assert rendered["data"] == values
    assert yaml.safe_load(dumps(cm)) == cm


def test_moved_folders_that_clash_are_refused_by_the_build(tmp_path: Path) -> None:
    from compiler.build import BuildOptions

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "mesh.yaml").write_text(POLICY)
    result = build(folder, BuildOptions(config_root="/srv/meshc", certs_root="/srv/meshc"))
    assert not result.ok
    assert sorted((d.code, d.subject) for d in result.diagnostics if d.is_error) == [
        ("E403", f"Service '{s}'") for s in ("db", "productpage", "ratings", "reviews")]


def _sample_deployments(ir) -> str:
    """A Deployment per version in pods of every service, labelled as the README says."""
    docs = []
    for s in ir.sidecars:
        k = s.kubernetes
        for v in (k.versions if k else ()):
            if v.explicit_endpoints:
                continue
            labels = dict(v.selector)
            docs.append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": v.headless_service, "namespace": k.namespace, "labels": labels},
                "spec": {"selector": {"matchLabels": labels}, "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": f"example.com/{s.service}:1"}]}}},
            })
    return yaml.safe_dump_all(docs)


CASES = sorted(p.name for p in (ROOT / "policies").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_policy_cases_in_pods_render_and_validate(case: str, tmp_path: Path) -> None:
    result = build(ROOT / "policies" / case)
    assert result.ok
    if not any(s.kubernetes for s in result.ir.sidecars):
        assert not any(rel.startswith("kubernetes/") for rel in result.files)
        return
    out = tmp_path / "out"
    write_out(result.files, out)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "deployments.yaml").write_text(_sample_deployments(result.ir))
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(out / 'kubernetes', overlay)}, deployments.yaml]\n"
        f"components: [{os.path.relpath(out / 'kubernetes' / 'sidecar', overlay)}]\n"
    )
    objects = kustomize(overlay)
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert deployments
    for d in deployments:
        gateway = d["metadata"]["labels"].get("meshc.dev/gateway")  # meshc's own (tests/test_kubernetes_gateway.py)
        service = gateway or d["metadata"]["labels"]["app"]
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations[layout.ANNOTATION_BOOTSTRAP] == hashlib.sha256(result.files[f"{service}/bootstrap.yaml"]).hexdigest()
        if gateway is None:
            assert _sidecar_container(d)["restartPolicy"] == "Always"


def test_a_port_below_1024_is_allowed_by_a_sysctl_not_a_capability(tmp_path: Path) -> None:
    files = _build(tmp_path, POLICY.replace("name: reviews\nnamespace: shop\nport: 9080", "name: reviews\nnamespace: shop\nport: 80"))
    spec = yaml.safe_load(files["kubernetes/sidecar/patch-reviews.yaml"])["spec"]["template"]["spec"]
    assert spec["securityContext"] == {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
    assert spec["initContainers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    other = yaml.safe_load(files["kubernetes/sidecar/patch-productpage.yaml"])["spec"]["template"]["spec"]
    assert "securityContext" not in other
