"""What a build means for a running mesh: the per-sidecar report, the write steps, recorded settings.

compiler/rollout.py is pure (old files, new files -> report and steps); the CLI prints the report
and manifest.json records it. The live proof that the steps keep traffic whole is in
tests/test_live_reload.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from compiler.build import build
from compiler.cli import main
from compiler.rollout import changes, steps

ROOT = Path(__file__).resolve().parent.parent
CANARY = ROOT / "policies" / "canary" / "mesh.yaml"
MTLS = ROOT / "policies" / "mtls"


def _compile(tmp_path: Path, text: str) -> dict[str, bytes]:
    folder = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "mesh.yaml").write_text(text)
    result = build(folder)
    assert result.ok, [d.render() for d in result.diagnostics]
    return result.files


def _canary(tmp_path: Path, edit=lambda t: t) -> dict[str, bytes]:
    return _compile(tmp_path, edit(CANARY.read_text()))


def _by_service(old, new) -> dict:
    return {c.service: c for c in changes(old, new)}


def test_report_says_what_each_sidecar_must_do(tmp_path: Path) -> None:
    base = _canary(tmp_path)
    assert {c.action for c in changes(None, base)} == {"added"}
    assert {c.action for c in changes(base, base)} == {"unchanged"}

    shifted = _canary(tmp_path, lambda t: t.replace("{v1: 90, v2: 10}", "{v1: 50, v2: 50}"))
    report = _by_service(base, shifted)
    assert report["frontend"].action == "reload" and report["frontend"].files == ("routes-outbound.yaml",)
    assert report["reviews"].action == "unchanged"

    moved = _canary(tmp_path, lambda t: t.replace("sidecar: {address: 127.0.1.2}",
                                                  "sidecar: {address: 127.0.1.2, admin_port: 15100}"))
    report = _by_service(base, moved)
    assert report["reviews"].action == "restart"
    assert report["reviews"].why == ("admin address or port changed",)
    assert "RESTART NEEDED: admin address or port changed" in report["reviews"].describe()

    fewer = {k: v for k, v in base.items() if not k.startswith("frontend/")}
    assert _by_service(base, fewer)["frontend"].action == "removed"
    assert _by_service(fewer, base)["frontend"].action == "added"


def test_steps_put_callees_first_when_adding_and_callers_first_when_removing(tmp_path: Path) -> None:
    one = _canary(tmp_path, lambda t: t.replace('  v2: {endpoints: ["127.0.0.1:19182"]}\n', "")
                  .replace("{v1: 90, v2: 10}", "{v1: 100}"))
    two = _canary(tmp_path)

    def order(old, new) -> list[list[str]]:
        return [sorted(rel for rel in step if "/" in rel) for step in steps(old, new)]

    # Adding v2: clusters, then reviews' inbound routes (v2 is delivered), then the caller's routes (v2 is picked).
    assert order(one, two) == [
        ["frontend/clusters.yaml", "reviews/clusters.yaml"],
        ["reviews/routes-inbound.yaml"],
        ["frontend/routes-outbound.yaml"],
    ]
    # Removing v2: clusters keep v2 for now (union), the caller stops picking v2, then reviews stops
    # delivering it, then the clusters go.
    removal = steps(two, one)
    assert order(two, one) == [
        ["frontend/clusters.yaml", "reviews/clusters.yaml"],
        ["frontend/routes-outbound.yaml"],
        ["reviews/routes-inbound.yaml"],
        ["frontend/clusters.yaml", "reviews/clusters.yaml"],
    ]
    names = lambda data: sorted(r["name"] for r in json.loads(data)["resources"])  # noqa: E731
    assert names(removal[0]["reviews/clusters.yaml"]) == ["inbound|reviews|v1", "inbound|reviews|v2"]
    assert names(removal[-1]["reviews/clusters.yaml"]) == ["inbound|reviews|v1"]
    assert removal[-1]["reviews/clusters.yaml"] == one["reviews/clusters.yaml"]


def test_build_prints_and_records_the_report(tmp_path: Path, capsys) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "mesh.yaml").write_text(CANARY.read_text())
    out = tmp_path / "out"
    assert main(["build", str(policy), "-o", str(out), "--settle", "0"]) == 0
    assert json.loads((out / "manifest.json").read_text())["rollout"]["reviews"] == {"action": "added"}
    capsys.readouterr()

    (policy / "mesh.yaml").write_text(CANARY.read_text().replace("{v1: 90, v2: 10}", "{v1: 50, v2: 50}"))
    assert main(["build", str(policy), "-o", str(out), "--settle", "0"]) == 0
    err = capsys.readouterr().err
    assert "frontend: reloaded (routes-outbound.yaml)" in err and "reviews: unchanged" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rollout"]["frontend"] == {"action": "reload", "files": ["routes-outbound.yaml"]}

    # Nothing changed: nothing is written, the manifest keeps the report of the last real change.
    before = (out / "manifest.json").stat().st_mtime_ns
    assert main(["build", str(policy), "-o", str(out), "--settle", "0"]) == 0
    assert "unchanged: no sidecar needs to do anything" in capsys.readouterr().err
    assert (out / "manifest.json").stat().st_mtime_ns == before
    assert main(["build", str(policy), "-o", str(out), "--check"]) == 0


def test_a_forgotten_certs_root_cannot_move_the_certificates(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["build", str(MTLS), "-o", str(out), "--certs-root", "/srv/certs"]) == 0
    assert json.loads((out / "manifest.json").read_text())["settings"] == {"certs_root": "/srv/certs"}
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()

    # Forgotten: the recorded value is used, and said.
    assert main(["build", str(MTLS), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "--certs-root /srv/certs (recorded in" in err and "unchanged" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot
    assert main(["build", str(MTLS), "-o", str(out), "--check"]) == 0

    # A different one is refused, nothing written; --relocate moves them on purpose.
    assert main(["build", str(MTLS), "-o", str(out), "--certs-root", "/elsewhere"]) == 1
    assert "was built with --certs-root /srv/certs" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot
    assert main(["build", str(MTLS), "-o", str(out), "--certs-root", "/elsewhere", "--relocate", "--settle", "0"]) == 0
    assert b"/elsewhere/" in b"".join(p.read_bytes() for p in out.rglob("sds-*.yaml"))

    # An output built without the flag refuses one that adds it.
    plain = tmp_path / "plain"
    assert main(["build", str(MTLS), "-o", str(plain)]) == 0
    assert main(["build", str(MTLS), "-o", str(plain), "--certs-root", "/srv/certs"]) == 1
    assert "was built with no --certs-root" in capsys.readouterr().err
    shutil.rmtree(plain)


def test_kubernetes_manifests_are_no_sidecar_and_land_last() -> None:
    # kubernetes/kustomization.yaml has two path parts like a sidecar file; it must not read as a sidecar
    # named 'kubernetes' (no service may have that name when the manifests are written: E401).
    old = {"reviews/bootstrap.yaml": b"node: {id: a}\n", "reviews/clusters.yaml": b"{}",
           "kubernetes/kustomization.yaml": b"base", "kubernetes/reviews/configmap.yaml": b"cm",
           "kubernetes/sidecar/kustomization.yaml": b"component"}
    assert [(c.service, c.action) for c in changes(None, old)] == [("reviews", "added")]
    new = {**old, "kubernetes/kustomization.yaml": b"base2", "kubernetes/reviews/configmap.yaml": b"cm2",
           "reviews/clusters.yaml": b'{"resources": []}', "reviews/bootstrap.yaml": b"node: {id: b}\n"}
    assert [(c.service, c.action, c.files) for c in changes(old, new)] == [
        ("reviews", "restart", ("bootstrap.yaml", "clusters.yaml"))]
    # Read by no sidecar of this output: they come with the last step, with the bootstraps.
    assert [sorted(step) for step in steps(old, new)] == [
        ["reviews/clusters.yaml"],
        ["kubernetes/kustomization.yaml", "kubernetes/reviews/configmap.yaml", "reviews/bootstrap.yaml"],
    ]


def test_pods_replaced_when_a_caller_version_rule_first_needs_the_pods_version(tmp_path: Path, capsys) -> None:
    # In pods a rule for some caller versions matches the version each pod's sidecar reads from its `version`
    # label (env MESHC_VERSION in the Deployment patch): the patch changes, so Kubernetes replaces the pods;
    # until then the running ones have no version and those rules do not match their calls.
    text = (ROOT / "policies" / "kubernetes-callers" / "mesh.yaml").read_text()
    any_version = text.replace("callers: [{service: reviews, versions: [v3]}]", "callers: [reviews]")
    assert any_version != text
    before, after = _compile(tmp_path, any_version), _compile(tmp_path, text)
    patch = "kubernetes/sidecar/patch-reviews.yaml"
    assert b"MESHC_VERSION" not in before[patch] and b"MESHC_VERSION" in after[patch]
    report = _by_service(before, after)
    reviews = report["reviews"]
    assert reviews.action == "restart" and reviews.files == ("listeners.yaml", "routes-outbound.yaml")
    assert len(reviews.why) == 1
    assert reviews.why[0].startswith(f"its sidecar now reads its pod's version label (MESHC_VERSION, {patch}): "
                                     "Kubernetes replaces reviews's pods on kubectl apply")
    assert "the rules for some caller versions (Route/ratings/rules[0]) do not match its calls" in reviews.why[0]
    assert "RESTART NEEDED" in reviews.describe()
    # The other sidecars' pods keep their patch: nothing to replace.
    assert report["productpage"].action == "unchanged" and report["ratings"].action == "unchanged"
    # The rule going back to every version: the variable goes, the pods are replaced again.
    back = _by_service(after, before)["reviews"]
    assert back.action == "restart" and "no longer reads its pod's version label" in back.why[0]
    # Another caller-version rule once the pods have their version: a reload.
    more = text.replace("  - to: {v1: 100}\n", "  - match:\n      callers: [{service: reviews, versions: [v2]}]\n"
                        "      headers: [{name: x-debug, exact: '1'}]\n    to: {v2: 100}\n  - to: {v1: 100}\n")
    assert more != text
    assert _by_service(after, _compile(tmp_path, more))["reviews"].action == "reload"

    # `meshc build` prints it, and the manifest records it.
    policy, out = tmp_path / "policy", tmp_path / "out"
    policy.mkdir()
    (policy / "mesh.yaml").write_text(any_version)
    assert main(["build", str(policy), "-o", str(out), "--settle", "0"]) == 0
    capsys.readouterr()
    (policy / "mesh.yaml").write_text(text)
    assert main(["build", str(policy), "-o", str(out), "--settle", "0"]) == 0
    err = capsys.readouterr().err
    assert "reviews: RESTART NEEDED: its sidecar now reads its pod's version label" in err
    assert json.loads((out / "manifest.json").read_text())["rollout"]["reviews"]["action"] == "restart"


def test_pod_patch_changes_other_than_the_version_label() -> None:
    from compiler.rollout import pod_reasons

    patch = b"spec:\n  template:\n    metadata:\n      annotations: {meshc.dev/bootstrap-sha256: %s}\n" \
            b"    spec:\n      initContainers: [{name: meshc-sidecar, image: %s}]\n"
    a = patch % (b"aa", b"envoy:1")
    assert pod_reasons("reviews", a, a, None) == []
    assert pod_reasons("reviews", a, patch % (b"bb", b"envoy:1"), None) == []  # the bootstrap's own restart says why
    assert pod_reasons("reviews", a, patch % (b"aa", b"envoy:2"), None) == [
        "its pods' Deployment patch changed (kubernetes/sidecar/patch-reviews.yaml): Kubernetes replaces reviews's "
        "pods on kubectl apply"]
    assert pod_reasons("reviews", None, a, None) == []  # a service new to pods: added, or its bootstrap says why


def test_rollout_names_agree_with_the_writers() -> None:
    # compiler/rollout.py keeps its own copies (it reads output files, it does not build them).
    from compiler import ir, rollout
    from compiler.kubernetes import layout

    assert rollout.KUBERNETES_PATCH.format("x") == f"{layout.COMPONENT_DIR}/{layout.patch_file('x')}"
    assert rollout.ANNOTATION_BOOTSTRAP == layout.ANNOTATION_BOOTSTRAP
    assert (rollout.CALLER_VERSION_ENV, rollout.CALLER_VERSION_KEY) == (ir.CALLER_VERSION_ENV, ir.CALLER_VERSION_KEY)
