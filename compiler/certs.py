"""Development certificates: a CA, one mesh certificate per service and gateway, and gateways' edge certificates.

`meshc certs POLICY_DIR -o CERTS` writes `CERTS/ca.pem` + `CERTS/ca-key.pem`
(reused if present) and, per service and per Gateway, `CERTS/<name>/{cert.pem,key.pem,ca.pem}`
with its SPIFFE ID: the layout a sidecar (or a gateway calling into the mesh) expects in its
`certs_dir`. For every certificate a Gateway serves to outside clients it also writes a server
certificate for the certificate's hosts (DNS SANs), signed by the same CA, in
`CERTS/<gateway>/edge/<first host>/` under the file names the policy's `cert` and `key` paths end
in, so the folder can be mounted where the policy says (or the paths pointed at it); a listener
with `client_ca` gets the CA there (`edge/client-ca/`) and a client certificate to test with
(`edge/client/`). Each folder's files are switched in one step (a `..data` link, as Kubernetes
mounts Secrets), so re-running it rotates certificates under running Envoys with no
half-rotated moment. For production, bring your own CA (cert-manager, SPIRE, a public CA for
the edge) and produce the same files.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import tempfile
from dataclasses import dataclass
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


def issue(
    ca_key,
    ca_cert,
    spiffe_id: str | None,
    dns_names: list[str],
    days: int = 30,
    valid_from: dt.datetime | None = None,
    usages: tuple[str, ...] = ("server", "client"),
):
    """A leaf certificate: URI SAN = the SPIFFE ID (a workload; None for an edge server certificate), DNS SANs
    = `dns_names`; `usages` (server, client) become its extended key usages."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = valid_from or dt.datetime.now(dt.timezone.utc)
    sans = ([x509.UniformResourceIdentifier(spiffe_id)] if spiffe_id else []) + [x509.DNSName(n) for n in dns_names]
    eku = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
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
        .add_extension(x509.ExtendedKeyUsage([eku[u] for u in usages]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
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


@dataclass(frozen=True)
class EdgeFolder:
    """One folder of edge material for a gateway: `CERTS/<gateway>/edge/<name>/`.

    kind: `server` (a certificate the gateway serves, for `hosts`), `client-ca` (the CA a listener's
    `client_ca` names) or `client` (a certificate for a test client, signed by that CA).
    `files` maps what is in it (`cert`, `key`, `ca`) to its file name; `paths` maps the same to where the
    policy says the gateway reads it (empty for `client`, which the gateway never reads).
    """

    name: str
    kind: str
    hosts: tuple[str, ...]
    files: dict[str, str]
    paths: dict[str, str]


def _folder_name(host: str) -> str:
    return "wildcard." + host[2:] if host.startswith("*.") else host


def edge_folders(gateway) -> list[EdgeFolder]:
    """What `meshc certs` writes for a Gateway's listeners (compiler.policy.gateway.Gateway), in order.

    One `server` folder per distinct (cert, key) pair of paths, named by its first host (a wildcard
    `*.example.com` as `wildcard.example.com`; `-2`, `-3`... when two pairs share it), holding the
    union of the hosts every listener serves it for; its files take the names the policy's paths end
    in (`cert.pem`/`key.pem` when those are equal). With any `client_ca`: one `client-ca` folder per
    distinct file, and one `client` folder.
    """
    pairs: dict[tuple[str, str], list[str]] = {}
    client_cas: list[str] = []
    for listener in gateway.listeners:
        if listener.tls is None:
            continue
        for c in listener.tls.certificates:
            hosts = pairs.setdefault((c.cert, c.key), [])
            hosts += [h for h in c.hosts if h not in hosts]
        if listener.tls.client_ca and listener.tls.client_ca not in client_cas:
            client_cas.append(listener.tls.client_ca)
    folders: list[EdgeFolder] = []
    taken: set[str] = set()

    def fresh(base: str) -> str:
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        return name

    for (cert, key), hosts in pairs.items():
        cert_file, key_file = posixpath.basename(cert), posixpath.basename(key)
        if cert_file == key_file:
            cert_file, key_file = "cert.pem", "key.pem"
        folders.append(
            EdgeFolder(
                fresh(_folder_name(hosts[0])), "server", tuple(hosts),
                {"cert": cert_file, "key": key_file}, {"cert": cert, "key": key},
            )
        )
    for path in client_cas:
        folders.append(EdgeFolder(fresh("client-ca"), "client-ca", (), {"ca": posixpath.basename(path)}, {"ca": path}))
    if client_cas:
        folders.append(EdgeFolder(fresh("client"), "client", (), {"cert": "cert.pem", "key": "key.pem"}, {}))
    return folders


def write_edge_certs(root: Path, trust_domain: str, gateway, days: int = 30) -> list[tuple[Path, EdgeFolder]]:
    """Write a Gateway's edge folders (see `edge_folders`) under `root/<gateway>/edge/`, every certificate
    signed by the development CA of `root`. Returns (folder, what it holds) in order."""
    root = Path(root)
    ca_key, ca_cert = load_or_make_ca(root, trust_domain)
    written = []
    for spec in edge_folders(gateway):
        folder = root / gateway.name / "edge" / spec.name
        if spec.kind == "client-ca":
            files = {spec.files["ca"]: (_pem_cert(ca_cert), 0o644)}
        else:
            names = list(spec.hosts) or [f"{gateway.name}-client.{trust_domain}"]
            key, cert = issue(ca_key, ca_cert, None, names, days, usages=(spec.kind,))
            files = {spec.files["cert"]: (_pem_cert(cert), 0o644), spec.files["key"]: (_pem_key(key), 0o600)}
        swap_in(folder, files)
        written.append((folder, spec))
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
