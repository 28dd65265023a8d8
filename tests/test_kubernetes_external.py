"""ExternalService CA bundles in pods: the caller's pods mount each bundle its sidecar's SDS names, from the
ConfigMap named after the ExternalService (compiler/policy/external_ca.py), rendered by the real kustomize
(no network) and validated against the Kubernetes API schemas (1.31 and 1.30). No cluster.

What matters, asserted against each pod's own rendered `sds-external-ca-*.yaml` where they meet:
- every file an external CA secret names is provided in that pod, by exactly one ConfigMap key, under
  the file name Envoy opens, in a read-only volume mounted at the very folder Envoy watches (kubelet's
  `..data` swap happens there), and nothing else is mounted from those ConfigMaps;
- ConfigMap `<external>-ca`, key = the file's base name; two externals naming one file share one
  ConfigMap (named after the first by name); the bundles of one folder are one projected volume;
- only the pods that originate TLS to it: the callers, the callers of a service whose Route mirrors to
  it, a gateway whose routes mirror to it; no mount for an external without tls;
- the checks (E403 a CA folder that is another volume's folder or `/`, E407 a path a ConfigMap cannot
  provide as written) say where; `--config-root` moving a sidecar's folder onto one is E403 at build.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import pytest
import yaml

from compiler.build import BuildOptions
from compiler.check import check
from compiler.kubernetes import layout
from compiler.kubernetes.gateway import CONTAINER as GATEWAY_CONTAINER
from compiler.load import load
from harness.kustomize import build_policy, find, render, validate


POLICY = """\
kind: Mesh
name: shop
mtls: {mode: strict}
---
kind: Service
name: checkout
namespace: shop
port: 9080
app_port: 9081
calls: [payments, geo, maps, orders-db, ratings]
---
kind: Service
name: reviews
namespace: shop
port: 9080
app_port: 9081
calls: [ratings]
---
kind: Service
name: ratings
namespace: shop
port: 9080
app_port: 9081
---
kind: Service
name: legacy
port: 9080
app_port: 9081
sidecar: {address: 10.0.0.8}
calls: [billing]
---
kind: Route
service: ratings
rules:
  - to: {default: 100}
    mirror: [{service: audit, to: default, percent: 10}]
---
kind: ExternalService
name: payments
host: api.payments.example
port: 443
tls: {ca: /etc/meshc/external/payments/ca.pem}
---
kind: ExternalService
name: billing
host: billing.example
port: 443
tls: {ca: /etc/meshc/external/payments/ca.pem}
---
kind: ExternalService
name: geo
host: geo.partner.example
port: 8443
tls: {ca: /etc/partners/geo.pem}
---
kind: ExternalService
name: maps
host: maps.partner.example
port: 443
tls: {ca: /etc/partners/maps-bundle.pem}
---
kind: ExternalService
name: audit
host: audit.example
port: 443
tls: {ca: /etc/meshc/external/audit/ca.crt}
---
kind: ExternalService
name: orders-db
host: orders-db.internal.example
port: 5432
protocol: tcp
---
kind: Gateway
name: ingress
namespace: edge
replicas: 1
listeners: [{name: web, port: 8080}]
routes: [{to: ratings}]
"""

DEPLOYMENTS = "".join(
    f"""---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: shop
  labels: {{app: {name}}}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: example.com/{name}:1
"""
    for name in ("checkout", "reviews", "ratings")
)


def _build(tmp_path: Path, text: str = POLICY, name: str = "policy", options: BuildOptions = BuildOptions()):
    return build_policy(tmp_path, text, name, options)


def _kustomize(tmp_path: Path, files: dict[str, bytes]) -> list[dict]:
    """The README's overlay (base + the user's Deployments + the sidecar Component), rendered offline."""
    return render(tmp_path, files, DEPLOYMENTS)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[dict[str, bytes], list[dict]]:
    tmp = tmp_path_factory.mktemp("ext")
    result = _build(tmp)
    assert result.ok, [d.render() for d in result.diagnostics]
    return result.files, _kustomize(tmp, result.files)


def _deployment(objects: list[dict], name: str, namespace: str = "shop") -> dict:
    return find(objects, "Deployment", name, namespace)


def _envoy(deployment: dict) -> dict:
    spec = deployment["spec"]["template"]["spec"]
    (c,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] in (layout.CONTAINER,
                                                                                             GATEWAY_CONTAINER)]
    return c


def _ca_secrets(files: dict[str, bytes], sidecar: str) -> dict[str, str]:
    """What the sidecar's external CA SDS files name: file -> the folder Envoy watches."""
    out = {}
    for rel, data in files.items():
        if rel.startswith(f"{sidecar}/sds-external-ca-"):
            for secret in json.loads(data)["resources"]:
                vc = secret["validation_context"]
                out[vc["trusted_ca"]["filename"]] = vc["watched_directory"]["path"]
    return out


def _ca_mounts(deployment: dict) -> dict[str, tuple[str, str]]:
    """Every file the pod's CA volumes provide: path -> (ConfigMap, key); asserts each is read-only and
    provides exactly the items it lists."""
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    out: dict[str, tuple[str, str]] = {}
    for m in _envoy(deployment)["volumeMounts"]:
        volume = volumes[m["name"]]
        sources = volume.get("projected", {}).get("sources", [])
        if not any("configMap" in s for s in sources):
            continue
        assert m["name"].startswith("meshc-ca-") and m.get("readOnly") is True and "subPath" not in m, m
        for s in sources:
            cm = s["configMap"]
            assert cm.get("optional") is None  # a missing ConfigMap keeps the pod from starting: said, not hidden
            for item in cm["items"]:
                path = posixpath.join(m["mountPath"], item["path"])
                assert path not in out, path
                out[path] = (cm["name"], item["key"])
    return out


def test_every_object_passes_kubernetes_validate(rendered) -> None:
    _, objects = rendered
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"} == {
        "checkout", "reviews", "ratings", "ingress"}
    validate(objects)  # raises ValidationError


def test_each_pod_mounts_exactly_the_bundles_its_sds_names(rendered) -> None:
    files, objects = rendered
    expected = {
        "checkout": {
            "/etc/meshc/external/payments/ca.pem": ("billing-ca", "ca.pem"),  # shared with billing: named after it
            "/etc/partners/geo.pem": ("geo-ca", "geo.pem"),
            "/etc/partners/maps-bundle.pem": ("maps-ca", "maps-bundle.pem"),
            "/etc/meshc/external/audit/ca.crt": ("audit-ca", "ca.crt"),  # it calls ratings, whose Route mirrors
        },
        "reviews": {"/etc/meshc/external/audit/ca.crt": ("audit-ca", "ca.crt")},
        "ratings": {},  # calls nothing outside: nothing mounted
    }
    for name, want in expected.items():
        d = _deployment(objects, name)
        secrets = _ca_secrets(files, name)
        assert set(secrets) == set(want), name
        assert _ca_mounts(d) == want, name
        mounts = {m["mountPath"] for m in _envoy(d)["volumeMounts"]}
        for path, watched in secrets.items():
            assert watched == posixpath.dirname(path) and watched in mounts  # the folder kubelet swaps
    # the gateway's routes to ratings mirror to audit: its Envoy originates TLS there too
    gw = _deployment(objects, "ingress", "edge")
    assert set(_ca_secrets(files, "ingress")) == {"/etc/meshc/external/audit/ca.crt"}
    assert _ca_mounts(gw) == {"/etc/meshc/external/audit/ca.crt": ("audit-ca", "ca.crt")}


def test_one_volume_per_folder(rendered) -> None:
    _, objects = rendered
    d = _deployment(objects, "checkout")
    spec = d["spec"]["template"]["spec"]
    ca = {m["mountPath"]: m["name"] for m in _envoy(d)["volumeMounts"] if m["name"].startswith("meshc-ca-")}
    assert ca == {"/etc/meshc/external/audit": "meshc-ca-0", "/etc/meshc/external/payments": "meshc-ca-1",
                  "/etc/partners": "meshc-ca-2"}
    (partners,) = [v for v in spec["volumes"] if v["name"] == "meshc-ca-2"]
    assert partners["projected"]["sources"] == [
        {"configMap": {"name": "geo-ca", "items": [{"key": "geo.pem", "path": "geo.pem"}]}},
        {"configMap": {"name": "maps-ca", "items": [{"key": "maps-bundle.pem", "path": "maps-bundle.pem"}]}},
    ]
    # the user's own containers and volumes are left alone
    assert [c["name"] for c in spec["containers"]] == ["app"]


def test_one_host_callers_get_nothing_and_no_tls_no_mount(rendered) -> None:
    files, _ = rendered
    assert "legacy/sds-external-ca-billing.yaml" in files  # built, for its host: the file is where the path says
    assert not any(rel.startswith("kubernetes/") and "legacy" in rel for rel in files)
    assert not any("orders-db" in rel for rel in files if rel.startswith("checkout/sds-"))


def test_moving_the_bundle_changes_only_the_mount_and_the_sds_file(tmp_path: Path) -> None:
    base = _build(tmp_path, name="a")
    moved = _build(tmp_path, POLICY.replace("/etc/partners/geo.pem", "/etc/partners/geo/ca.pem"), name="b")
    assert base.ok and moved.ok
    changed = sorted(rel for rel in base.files if base.files[rel] != moved.files.get(rel))
    assert changed == ["checkout/sds-external-ca-geo.yaml", "kubernetes/checkout/configmap.yaml",
                       "kubernetes/sidecar/patch-checkout.yaml"], changed
    patch = yaml.safe_load(moved.files["kubernetes/sidecar/patch-checkout.yaml"])
    volumes = {v["name"]: v for v in patch["spec"]["template"]["spec"]["volumes"]}
    (envoy,) = patch["spec"]["template"]["spec"]["initContainers"]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in envoy["volumeMounts"]}
    assert mounts["/etc/partners/geo"]["projected"]["sources"] == [
        {"configMap": {"name": "geo-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}}]


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def _diags(tmp_path: Path, text: str, name: str = "c") -> list[tuple[str, str, str]]:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "mesh.yaml").write_text(text)
    loaded = load(folder)
    assert not loaded.diagnostics, loaded.diagnostics
    return sorted((d.code, d.path, d.render()) for d in check(loaded.policy) if d.code in ("E403", "E407"))


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_bundle_folder_that_is_another_volumes_folder(tmp_path: Path) -> None:
    text = (POLICY
            .replace("/etc/meshc/external/payments/ca.pem}", "/etc/meshc/ca.pem}")  # config_dir (payments, billing)
            .replace("/etc/partners/geo.pem", "/etc/meshc/certs/geo.pem")            # the certificate Secret
            .replace("/etc/partners/maps-bundle.pem", "/tmp/maps.pem")               # the scratch emptyDir
            .replace("/etc/meshc/external/audit/ca.crt", "/audit.crt"))              # '/'
    got = _diags(tmp_path, text)
    assert [(code, path) for code, path, _ in got] == [("E403", "tls.ca")] * 4, got
    messages = {m.split("ExternalService '")[1].split("'")[0]: m for _, _, m in got}  # subject name -> message
    assert "mesh.yaml:" + str(_line(text, "name: audit") + 3) in messages["audit"]
    assert "in the pods of 'checkout', 'reviews', gateway 'ingress'" in messages["audit"]
    assert "is '/'" in messages["audit"]
    assert "it is config_dir" in messages["payments"]
    assert "ConfigMap 'billing-ca' (key 'ca.pem')" in messages["payments"]
    assert "it is mtls.certs_dir" in messages["geo"]
    assert "it is /tmp (the sidecar's scratch folder)" in messages["maps"]
    # billing is called by a one-host service only, payments by a pod: the clash is payments' alone
    assert "billing" not in messages


def test_a_bundle_folder_that_is_an_access_log_or_edge_folder(tmp_path: Path) -> None:
    text = (POLICY
            .replace("app_port: 9081\ncalls: [ratings]", "app_port: 9081\ncalls: [ratings]\n"
                     "observability: {access_log: {to: file, path: /etc/meshc/external/audit/access.log}}")
            .replace("listeners: [{name: web, port: 8080}]",
                     "listeners: [{name: web, port: 8443, protocol: https, tls: {certificates: "
                     "[{hosts: [a.example.com], cert: /etc/meshc/external/audit/tls.crt, "
                     "key: /etc/meshc/external/audit/tls.key}]}}]"))
    got = _diags(tmp_path, text)
    messages = [m for _, _, m in got]
    assert len(messages) == 3, messages
    assert sum("it is the access log's folder" in m and "in the pods of 'reviews'," in m for m in messages) == 1
    edge = [m for m in messages if "(gateway 'ingress')" in m and "in the pods of gateway 'ingress'," in m]
    assert len(edge) == 2  # the certificate and the key name that folder
    assert all(m.startswith("mesh.yaml:") and "ExternalService 'audit'" in m for m in messages)


def test_a_bundle_folder_that_would_hide_what_envoy_needs(tmp_path: Path) -> None:
    text = (POLICY.replace("/etc/partners/geo.pem", "/usr/local/geo.pem")        # above /usr/local/bin/envoy
            .replace("/etc/partners/maps-bundle.pem", "/usr/lib/maps.pem"))      # the libraries Envoy loads
    got = [m for _, _, m in _diags(tmp_path, text)]
    assert len(got) == 2, got
    assert "'/usr/local' would hide the Envoy binary /usr/local/bin/envoy" in next(m for m in got if "'geo'" in m)
    assert "'/usr/lib' would hide the system folder /usr/lib" in next(m for m in got if "'maps'" in m)
    fine = POLICY.replace("/etc/partners/geo.pem", "/usr/local/share/ca-certificates/geo.pem")
    assert _diags(tmp_path, fine, name="fine") == []


def test_a_path_a_configmap_cannot_provide(tmp_path: Path) -> None:
    text = (POLICY.replace("/etc/partners/geo.pem", "/etc/partners/..geo.pem")
            .replace("/etc/partners/maps-bundle.pem", "/etc/partners/../maps.pem"))
    got = _diags(tmp_path, text)
    assert [(code, path) for code, path, _ in got] == [("E407", "tls.ca"), ("E407", "tls.ca")], got
    geo = next(m for _, _, m in got if "'geo'" in m)
    assert geo.startswith(f"mesh.yaml:{_line(text, '..geo.pem')}:") and "'..geo.pem' cannot be a ConfigMap key" in geo
    # the same paths for a one-host caller only: nothing to say
    only_host = text.replace("calls: [payments, geo, maps, orders-db, ratings]",
                             "calls: [payments, orders-db, ratings]")
    assert _diags(tmp_path, only_host, name="host") == []


def test_config_root_onto_a_bundle_folder_is_refused_at_build(tmp_path: Path) -> None:
    # --config-root puts reviews' files at /etc/meshc/cfg/reviews: where the audit bundle is mounted
    text = POLICY.replace("/etc/meshc/external/audit/ca.crt", "/etc/meshc/cfg/reviews/ca.crt")
    assert _diags(tmp_path, text) == []  # the policy's own folders do not clash
    result = _build(tmp_path, text, name="built", options=BuildOptions(config_root="/etc/meshc/cfg"))
    problems = [d.render() for d in result.diagnostics if d.code == "E403"]
    assert not result.ok and len(problems) == 1, problems
    assert "Service 'reviews'" in problems[0] and "a folder of external CA bundles" in problems[0], problems[0]
