"""The checks for a gateway in pods (E291, E292, E401, E403, E404, E405, E406) say where, on the policy of
tests/test_kubernetes_gateway.py changed one mistake at a time."""

from __future__ import annotations

from pathlib import Path

from compiler.check import check
from compiler.load import load
from test_kubernetes_gateway import POLICY


def _codes(tmp_path: Path, text: str, name: str = "c") -> list[tuple[str, str]]:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "mesh.yaml").write_text(text)
    loaded = load(folder)
    assert not loaded.diagnostics, loaded.diagnostics
    return sorted((d.code, d.render()) for d in check(loaded.policy) if d.code.startswith(("E29", "E40")))


def test_checks_for_a_gateway_in_pods(tmp_path: Path) -> None:
    text = (POLICY
            .replace("name: ingress\nnamespace: edge", "name: productpage-v2\nnamespace: shop")
            .replace("from: [ingress]", "from: [productpage-v2]")
            .replace("- name: http\n", "- name: plain-http-for-browsers\n")
            .replace("- name: partners\n", "- name: meshc-metrics\n")
            .replace("client_ca: /etc/edge/partners-ca/ca.pem", "client_ca: /etc/meshc/ca.pem")
            .replace("hosts: [\"*.api.example.com\", api.example.com]", "hosts: [shop.example.com]")
            .replace("cert: /etc/edge/api/cert.pem", "cert: /cert.pem"))
    got = _codes(tmp_path, text)
    assert [code for code, _ in got] == ["E291", "E403", "E403", "E404", "E404", "E405"], got


def test_check_names_too_long(tmp_path: Path) -> None:
    long_name = "g" * 60
    text = (POLICY.replace("name: ingress\n", f"name: {long_name}\n").replace("from: [ingress]", f"from: [{long_name}]")
            .replace("hosts: [shop.example.com]\n          cert: /etc/edge/shop/tls.crt",
                     "hosts: [" + ".".join(["a" * 60] * 3) + ".example.com]\n          cert: /etc/edge/shop/tls.crt"))
    got = _codes(tmp_path, text)
    assert [code for code, _ in got] == ["E292", "E405"], got


def test_a_service_named_kubernetes_while_only_gateways_run_in_pods(tmp_path: Path) -> None:
    text = (POLICY.replace("name: productpage\nnamespace: shop", "name: kubernetes\nnamespace: shop")
            .replace("service: productpage", "service: kubernetes").replace("to: productpage", "to: kubernetes")
            .replace("app_port: 9081\n", "app_port: 9081\nsidecar: {address: 10.0.0.8}\n"))
    assert [code for code, _ in _codes(tmp_path, text)] == ["E401"]


def test_two_gateways_with_one_service_account_in_one_namespace(tmp_path: Path) -> None:
    second = "\n---\nkind: Gateway\nname: partners\nnamespace: edge\nservice_account: edge-gateway\n" \
             "listeners: [{name: web, port: 8080}]\nroutes: [{to: productpage}]\n"
    ((code, message),) = _codes(tmp_path, POLICY + second)
    lines = (POLICY + second).splitlines()
    line = len(lines) - lines[::-1].index("service_account: edge-gateway")
    assert code == "E406" and message.startswith(f"mesh.yaml:{line}:"), message
    other_namespace = second.replace("namespace: edge", "namespace: partners")
    assert _codes(tmp_path, POLICY + other_namespace, name="other") == []
