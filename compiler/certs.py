"""Development certificates: a CA and one certificate per service with its SPIFFE ID.

`meshc certs POLICY_DIR -o CERTS` writes `CERTS/ca.pem` + `CERTS/ca-key.pem`
(reused if present) and, per service, `CERTS/<service>/{cert.pem,key.pem,ca.pem}`:
the layout a sidecar expects in its `certs_dir`. The three files are switched
in one step (a `..data` link, as Kubernetes mounts Secrets), so re-running it
rotates certificates under running sidecars with no half-rotated moment. For production, bring your own CA (cert-manager,
SPIRE) and produce the same three files.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(trust_domain: str, days: int = 365):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshc"), x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} dev CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(ca_key, ca_cert, spiffe_id: str, dns_names: list[str], days: int = 30, valid_from: dt.datetime | None = None):
    """A leaf certificate for one workload: URI SAN = its SPIFFE ID; client and server use."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = valid_from or dt.datetime.now(dt.timezone.utc)
    sans = [x509.UniformResourceIdentifier(spiffe_id)] + [x509.DNSName(n) for n in dns_names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else "workload")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _put(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_or_make_ca(root: Path, trust_domain: str):
    key_file, cert_file = root / "ca-key.pem", root / "ca.pem"
    if key_file.exists() and cert_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        return key, x509.load_pem_x509_certificate(cert_file.read_bytes())
    key, cert = make_ca(trust_domain)
    _put(key_file, _pem_key(key), 0o600)
    _put(cert_file, _pem_cert(cert))
    return key, cert


def write_service_certs(root: Path, trust_domain: str, identities: dict[str, str], days: int = 30) -> list[Path]:
    """identities: service -> SPIFFE ID. Returns the folders written (one per service)."""
    root = Path(root)
    ca_key, ca_cert = load_or_make_ca(root, trust_domain)
    written = []
    for service, spiffe in sorted(identities.items()):
        key, cert = issue(ca_key, ca_cert, spiffe, [service], days)
        folder = root / service
        swap_in(folder, {"cert.pem": (_pem_cert(cert), 0o644), "key.pem": (_pem_key(key), 0o600), "ca.pem": (_pem_cert(ca_cert), 0o644)})
        written.append(folder)
    return written


def swap_in(folder: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Replace a set of files in one step, as Kubernetes does for mounted Secrets.

    Envoy reloads a watched folder on every file moved into it, so renaming
    cert.pem and key.pem one after the other would show it a new key with the
    old certificate (a failed rotation) first. Instead the files go into a new
    hidden folder, the `..data` link is switched to it with one rename, and
    `cert.pem` etc. are fixed links to `..data/<name>`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix="..", dir=folder))
    os.chmod(fresh, 0o755)
    for name, (data, mode) in files.items():
        (fresh / name).write_bytes(data)
        os.chmod(fresh / name, mode)
    data_link = folder / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    tmp_link = folder / f"..data.{fresh.name[2:]}"
    os.symlink(fresh.name, tmp_link)
    os.replace(tmp_link, data_link)  # the one switch a watcher sees
    for name in files:
        target = folder / name
        if not (target.is_symlink() and os.readlink(target) == f"..data/{name}"):
            tmp = folder / f".{name}.link"
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(f"..data/{name}", tmp)
            os.replace(tmp, target)
    if old and old != fresh.name and (folder / old).is_dir():
        for f in (folder / old).iterdir():
            f.unlink()
        (folder / old).rmdir()


def throwaway_set(folder: Path) -> dict[str, str]:
    """A CA and a leaf in `folder`, for checks that need files to exist: {'cert','key','ca'} -> path."""
    ca_key, ca_cert = make_ca("validate.invalid", days=1)
    key, cert = issue(ca_key, ca_cert, "spiffe://validate.invalid/ns/x/sa/x", ["validate"], days=1)
    paths = {"cert": folder / "cert.pem", "key": folder / "key.pem", "ca": folder / "ca.pem"}
    paths["cert"].write_bytes(_pem_cert(cert))
    paths["key"].write_bytes(_pem_key(key))
    paths["ca"].write_bytes(_pem_cert(ca_cert))
    return {k: str(v) for k, v in paths.items()}


def throwaway_jwks() -> str:
    """A JWKS document with one fresh RSA public key, for checks that need a valid key set."""
    import base64
    import json

    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return json.dumps({"keys": [{"kty": "RSA", "kid": "validate", "alg": "RS256", "n": b64(numbers.n), "e": b64(numbers.e)}]})
