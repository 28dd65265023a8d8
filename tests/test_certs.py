"""`meshc certs`: the development CA, mesh certificates for services and gateways, and gateways' edge certificates.

Checked with cryptography's X.509 path validation (the rules a browser applies: chain to the CA, SANs,
extended key usage), not by reading fields back only.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from compiler.certs import edge_folders
from compiler.cli import main
from compiler.policy.gateway import Gateway

TRUST_DOMAIN = "shop.example"

POLICY = """\
kind: Mesh
name: shop
trust_domain: shop.example
mtls: {mode: strict, certs_dir: /etc/meshc/certs}
---
kind: Service
name: productpage
port: 9080
app_port: 20280
sidecar: {address: 127.0.12.1}
---
kind: Gateway
name: ingress
namespace: edge
service_account: ingress-sa
address: 127.0.12.9
listeners:
  - {name: http, port: 8080, redirect_to_https: true}
  - name: https
    port: 8443
    protocol: https
    tls:
      certificates:
        - {hosts: [shop.example.com, www.shop.example.com], cert: /etc/edge/shop/tls.crt, key: /etc/edge/shop/tls.key}
        - {hosts: ["*.api.example.com"], cert: /etc/edge/api/cert.pem, key: /etc/edge/api/key.pem}
  - name: partners
    port: 9443
    protocol: https
    tls:
      certificates:
        - {hosts: [partners.example.com], cert: /etc/edge/partners/same.pem, key: /etc/edge/partners-key/same.pem}
        - {hosts: [shop.example.com, m.shop.example.com], cert: /etc/edge/shop/tls.crt, key: /etc/edge/shop/tls.key}
      client_ca: /etc/edge/clients/ca-bundle.pem
routes:
  - {hosts: [shop.example.com], to: productpage}
"""


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), ext.get_values_for_type(x509.UniformResourceIdentifier)


def eku(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def verify_server(ca: x509.Certificate, leaf: x509.Certificate, host: str) -> None:
    """Raises unless `leaf` chains to `ca` and is valid for a TLS server named `host` (as a browser checks)."""
    verifier = PolicyBuilder().store(Store([ca])).time(dt.datetime.now(dt.timezone.utc)).build_server_verifier(
        x509.DNSName(host)
    )
    verifier.verify(leaf, [])


@pytest.fixture
def issued(tmp_path, capsys):
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "mesh.yaml").write_text(POLICY)
    out = tmp_path / "certs"
    assert main(["certs", str(policy), "-o", str(out)]) == 0
    return out, capsys.readouterr().err


def test_gateway_gets_a_mesh_identity_like_a_sidecar(issued):
    out, err = issued
    ca = load_cert(out / "ca.pem")
    for name, spiffe in {
        "productpage": f"spiffe://{TRUST_DOMAIN}/ns/default/sa/productpage",
        "ingress": f"spiffe://{TRUST_DOMAIN}/ns/edge/sa/ingress-sa",
    }.items():
        leaf = load_cert(out / name / "cert.pem")
        assert sans(leaf)[1] == [spiffe], sans(leaf)
        assert (out / name / "ca.pem").read_bytes() == (out / "ca.pem").read_bytes()
        leaf.verify_directly_issued_by(ca)
        assert f"{out / name}: {spiffe}" in err
        assert eku(leaf) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_edge_server_certificates_cover_their_hosts_and_chain_to_the_dev_ca(issued):
    out, err = issued
    ca = load_cert(out / "ca.pem")
    edge = out / "ingress" / "edge"
    assert sorted(p.name for p in edge.iterdir()) == [
        "client", "client-ca", "partners.example.com", "shop.example.com", "wildcard.api.example.com",
    ]
    # The same cert/key pair on two listeners: one folder, the union of the hosts, the policy's file names.
    shop = load_cert(edge / "shop.example.com" / "tls.crt")
    assert sans(shop) == (["shop.example.com", "www.shop.example.com", "m.shop.example.com"], [])
    assert (edge / "shop.example.com" / "tls.key").is_file()
    for host in ("shop.example.com", "www.shop.example.com", "m.shop.example.com"):
        verify_server(ca, shop, host)
    with pytest.raises(x509.verification.VerificationError):
        verify_server(ca, shop, "evil.example.com")
    api = load_cert(edge / "wildcard.api.example.com" / "cert.pem")
    assert sans(api) == (["*.api.example.com"], [])
    verify_server(ca, api, "v1.api.example.com")
    assert eku(api) == {ExtendedKeyUsageOID.SERVER_AUTH}, "an edge certificate is for serving only"
    # cert and key paths that end in the same file name: cert.pem and key.pem in the folder
    assert {"cert.pem", "key.pem"} <= set(os.listdir(edge / "partners.example.com"))
    verify_server(ca, load_cert(edge / "partners.example.com" / "cert.pem"), "partners.example.com")
    # where the gateway reads them is printed with them
    assert f"{edge / 'shop.example.com'}: server certificate for shop.example.com, www.shop.example.com, m.shop.example.com" in err
    assert "tls.crt: the gateway reads /etc/edge/shop/tls.crt" in err
    assert "tls.key: the gateway reads /etc/edge/shop/tls.key" in err
    assert "mount each folder where the paths say" in err
    # keys are private
    assert (edge / "shop.example.com" / "tls.key").stat().st_mode & 0o077 == 0


def test_client_ca_folder_and_a_client_certificate_signed_by_it(issued):
    out, err = issued
    edge = out / "ingress" / "edge"
    ca = load_cert(edge / "client-ca" / "ca-bundle.pem")
    assert ca == load_cert(out / "ca.pem")
    client = load_cert(edge / "client" / "cert.pem")
    client.verify_directly_issued_by(ca)
    assert eku(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert "ca-bundle.pem: the gateway reads /etc/edge/clients/ca-bundle.pem" in err


def test_rerun_rotates_edge_certificates_in_place_and_keeps_the_ca(issued, tmp_path):
    out, _ = issued
    leaf = out / "ingress" / "edge" / "shop.example.com" / "tls.crt"
    before, ca_before = load_cert(leaf).serial_number, (out / "ca.pem").read_bytes()
    assert leaf.is_symlink() and os.readlink(leaf) == "..data/tls.crt", "switched in one step, as a Secret mount"
    assert main(["certs", str(tmp_path / "policy"), "-o", str(out)]) == 0
    assert load_cert(leaf).serial_number != before
    assert (out / "ca.pem").read_bytes() == ca_before
    verify_server(load_cert(out / "ca.pem"), load_cert(leaf), "shop.example.com")


def test_edge_folders_without_tls_and_name_clashes():
    gw = Gateway.model_validate(
        {
            "name": "g",
            "listeners": [
                {"name": "plain", "port": 80},
                {
                    "name": "s",
                    "port": 443,
                    "protocol": "https",
                    "tls": {
                        "certificates": [
                            {"hosts": ["a.example.com"], "cert": "/x/1/c.pem", "key": "/x/1/k.pem"},
                            {"hosts": ["a.example.com"], "cert": "/x/2/c.pem", "key": "/x/2/k.pem"},
                        ]
                    },
                },
            ],
        }
    )
    folders = edge_folders(gw)
    assert [(f.name, f.kind, f.hosts) for f in folders] == [
        ("a.example.com", "server", ("a.example.com",)),
        ("a.example.com-2", "server", ("a.example.com",)),
    ]
    assert folders[1].paths == {"cert": "/x/2/c.pem", "key": "/x/2/k.pem"}
    assert edge_folders(Gateway.model_validate({"name": "g", "listeners": [{"name": "p", "port": 80}]})) == []
