"""The Docker integration suite: compiled sidecars in real containers, as a user deploys them.

    make integration        # starts dockerd if needed, builds the image, runs this suite
    ENVOY_IMAGE=$(docker/build-image.sh .venv/bin/python) .venv/bin/python -m pytest tests/integration

ENVOY_IMAGE names the sidecar image: the one docker/build-image.sh builds FROM
scratch (no registry needed), or, where a registry is reachable,
`ENVOY_IMAGE=envoyproxy/envoy:v1.40.0` after a `docker pull` (docker-compose.yml starts
/usr/local/bin/envoy itself, so that image's entrypoint script is bypassed).

What happens, once per session (pytest-docker's `docker_services`):

1. `mesh_env`: the test process starts the apps (tests/harness `Upstream`s on
   127.0.0.1), writes a policy (frontend -> reviews v1/v2 -> ratings, strict
   mTLS, an AuthorizationPolicy, metrics) with every sidecar on its own
   address 127.0.x.y, and compiles it the way a user does: `build()` with
   default `BuildOptions` (no config_root / certs_root), so every sidecar reads
   the Mesh's config_dir /etc/meshc and mtls.certs_dir /etc/meshc-certs, and
   `write()` into out/. Certificates come from compiler.certs. MESHC_OUT and
   MESHC_CERTS go into os.environ for docker-compose.yml.
2. pytest-docker runs `docker-compose up -d` (`docker_setup`); one container per
   service, host networking, out/<svc>/ mounted at /etc/meshc and certs/<svc>/
   at /etc/meshc-certs.
3. `docker_mesh` waits (bounded polling) until every sidecar's admin /ready
   says LIVE; a container that exits fails the session with its
   `docker-compose logs`.
4. At the end `docker-compose down` (`docker_cleanup`), and again from
   `_compose_down_guard` so containers are removed even when `up` itself
   failed half-way.

If Docker is not reachable the suite FAILS (it never skips): run
docker/ensure-docker.sh (or `make integration`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from compiler import certs
from compiler.build import BuildOptions, BuildResult, build
from compiler.write import write
from harness import HarnessError, Upstream, send_many, wait_until

HERE = Path(__file__).resolve().parent
COMPOSE_FILE = HERE / "docker-compose.yml"
SERVICES = ("frontend", "reviews", "ratings")
TRUST_DOMAIN = "docker.test"
READY_TIMEOUT = 30.0  # seconds for every container to report LIVE (image start + config load)
DOCKER_TIMEOUT = 60  # seconds for one docker / docker-compose command


# --------------------------------------------------------------------------
# the mesh under test: addresses, ports, apps, policy
# --------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free_on(port: int, hosts) -> bool:
    for h in hosts:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((h, port))
            except OSError:
                return False
    return True


@dataclass(frozen=True)
class Placement:
    address: str
    port: int  # inbound listener (what callers' sidecars connect to)
    app_port: int
    outbound_port: int
    admin_port: int


@dataclass
class MeshEnv:
    root: Path
    placements: dict[str, Placement]
    metrics_port: int
    apps: dict[str, Upstream]  # "reviews-v1", "reviews-v2", "ratings"
    flaky: dict[str, bool] = field(default_factory=lambda: {"on": False, "fail_next": True})
    last_build: BuildResult | None = None

    @property
    def policy_dir(self) -> Path:
        return self.root / "policy"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    def policy(self, pinned: str = "v1") -> str:
        """The policy text; `pinned` is the version that requests to /pinned go to (changed for the hot reload)."""
        p = self.placements

        def svc(name: str, extra: str, app: bool = False) -> str:
            """A Service document; `app`: its one version is the app on the placement's app_port (no endpoints listed)."""
            pl = p[name]
            return (
                f"kind: Service\nname: {name}\nport: {pl.port}\n"
                + (f"app_port: {pl.app_port}\n" if app else "")
                + f"sidecar: {{address: {pl.address}, outbound_port: {pl.outbound_port}, admin_port: {pl.admin_port}}}\n"
                f"{extra}"
            )

        v1, v2, ratings = self.apps["reviews-v1"], self.apps["reviews-v2"], self.apps["ratings"]
        docs = [
            "kind: Mesh\nname: docker-it\n"
            f"trust_domain: {TRUST_DOMAIN}\n"
            "config_dir: /etc/meshc\n"
            "mtls: {mode: strict, certs_dir: /etc/meshc-certs}\n"
            "observability:\n"
            f"  metrics: {{port: {self.metrics_port}}}\n"
            "  access_log: {to: stdout, only: errors}\n",
            svc("frontend", "calls: [reviews]\n", app=True),
            svc(
                "reviews",
                "calls: [ratings]\nversions:\n"
                f'  v1: {{endpoints: ["{v1.endpoint}"]}}\n'
                f'  v2: {{endpoints: ["{v2.endpoint}"]}}\n',
            ),
            # ratings -> reviews: a caller that reviews' AuthorizationPolicy refuses (a W201 call cycle, on purpose).
            svc("ratings", f'calls: [reviews]\nversions:\n  default: {{endpoints: ["{ratings.endpoint}"]}}\n'),
            "kind: Route\nservice: reviews\nrules:\n"
            "  - match: {headers: [{name: x-user-group, exact: beta}]}\n"
            "    to: {v2: 100}\n"
            "  - match: {path: {prefix: /mirror}}\n"
            "    to: {v1: 100}\n"
            "    mirror: [{to: v2, percent: 100}]\n"
            "  - match: {path: {prefix: /pinned}}\n"
            f"    to: {{{pinned}: 100}}\n"
            "  - to: {v1: 80, v2: 20}\n",
            "kind: Route\nservice: ratings\nrules:\n"
            "  - to: {default: 100}\n"
            "    retries: {attempts: 2, on: [5xx]}\n",
            "kind: AuthorizationPolicy\nservice: reviews\nallow:\n  - from: [frontend]\n",
        ]
        return "---\n".join(docs)

    def build_and_write(self, pinned: str = "v1") -> BuildResult:
        """Write the policy, compile it as a user would (no config_root/certs_root), write it into out/."""
        self.policy_dir.mkdir(parents=True, exist_ok=True)
        (self.policy_dir / "mesh.yaml").write_text(self.policy(pinned))
        result = build(self.policy_dir, BuildOptions())
        if not result.ok:
            text = "\n".join(d.render(str(self.policy_dir)) for d in result.diagnostics)
            pytest.fail(f"the integration policy does not compile:\n{text}", pytrace=False)
        write(result.files, self.out)
        self.last_build = result
        return result

    # -- where things listen ------------------------------------------------
    def outbound(self, svc: str) -> tuple[str, int]:
        return self.placements[svc].address, self.placements[svc].outbound_port

    def inbound(self, svc: str) -> tuple[str, int]:
        return self.placements[svc].address, self.placements[svc].port

    def admin(self, svc: str) -> str:
        return f"http://{self.placements[svc].address}:{self.placements[svc].admin_port}"

    def metrics(self, svc: str) -> tuple[str, int]:
        return self.placements[svc].address, self.metrics_port


def _flaky_handler(env: MeshEnv):
    """ratings' app: while env.flaky['on'], every other request gets 503 (first one fails)."""

    def handler(req):
        if not env.flaky["on"]:
            return None
        fail = env.flaky["fail_next"]
        env.flaky["fail_next"] = not fail
        return 503 if fail else None

    return handler


# --------------------------------------------------------------------------
# docker plumbing
# --------------------------------------------------------------------------


def _run(args: list[str], timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def docker_reachable() -> str:
    """Docker, docker-compose and ENVOY_IMAGE, or a failed session with a clear message (never a skip)."""
    how = "start one with docker/ensure-docker.sh (or run `make integration`)"
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        pytest.fail(f"the Docker integration suite needs `docker` and `docker-compose` on PATH; {how}", pytrace=False)
    try:
        info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Docker is not reachable: `docker info` did not answer within 20s; {how}", pytrace=False)
    if info.returncode != 0:
        pytest.fail(f"Docker is not reachable (`docker info` failed: {info.stderr.strip()}); {how}", pytrace=False)
    image = os.environ.get("ENVOY_IMAGE", "")
    if not image:
        pytest.fail(
            "ENVOY_IMAGE is not set: ENVOY_IMAGE=$(docker/build-image.sh .venv/bin/python) "
            "(or envoyproxy/envoy:v1.40.0 where a registry is reachable)",
            pytrace=False,
        )
    # No implicit pull: the suite's traffic stays on loopback. Pull or build the image first.
    if _run(["docker", "image", "inspect", image], timeout=20).returncode != 0:
        pytest.fail(
            f"ENVOY_IMAGE={image} is not in the local Docker engine: build it with docker/build-image.sh "
            f"(or `docker pull {image}` where a registry is reachable)",
            pytrace=False,
        )
    return info.stdout.strip()


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return "docker-compose"


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"meshc-it-{os.getpid()}"


@pytest.fixture(scope="session")
def compose(docker_compose_command, docker_compose_file, docker_compose_project_name):
    """Run one docker-compose subcommand for this project: compose("logs", "--no-color") -> CompletedProcess."""

    def run(*args: str, timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess:
        cmd = [*docker_compose_command.split(), "-f", docker_compose_file, "-p", docker_compose_project_name, *args]
        return _run(cmd, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def _compose_down_guard(compose, docker_reachable):
    """Remove the project's containers at the end even if `docker-compose up` failed half-way
    (pytest-docker only runs `docker_cleanup` after a successful setup)."""
    yield
    try:
        compose("down", "-v", "--remove-orphans", "--timeout", "5")
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="session")
def mesh_env(tmp_path_factory, docker_reachable, _compose_down_guard) -> MeshEnv:
    """Apps started, policy compiled into out/, certificates made, MESHC_OUT/MESHC_CERTS exported."""
    root = tmp_path_factory.mktemp("docker-mesh")
    apps = {
        "reviews-v1": Upstream("reviews", "v1").start(),
        "reviews-v2": Upstream("reviews", "v2").start(),
        "ratings": Upstream("ratings").start(),
    }
    try:
        rng = random.Random()
        placements: dict[str, Placement] = {}
        for _ in range(20):  # a block 127.0.x.* nobody else uses right now
            block = f"127.0.{rng.randint(100, 250)}"
            addresses = {svc: f"{block}.{i + 2}" for i, svc in enumerate(SERVICES)}
            if all(_port_free_on(15000, [a]) for a in addresses.values()):
                break
        app_ports = {"frontend": _free_port("127.0.0.1"), "reviews": apps["reviews-v1"].port, "ratings": apps["ratings"].port}
        for svc, addr in addresses.items():
            ports: set[int] = set()
            while len(ports) < 3:
                ports.add(_free_port(addr))
            port, outbound, admin = sorted(ports)
            placements[svc] = Placement(addr, port, app_ports[svc], outbound, admin)
        used = {p for pl in placements.values() for p in (pl.port, pl.outbound_port, pl.admin_port)}
        for _ in range(50):
            metrics = _free_port("127.0.0.1")
            if metrics not in used and _port_free_on(metrics, addresses.values()):
                break
        env = MeshEnv(root, placements, metrics, apps)
        apps["ratings"].handler = _flaky_handler(env)
        result = env.build_and_write("v1")
        identities = {s.service: s.tls.identity for s in result.ir.sidecars}
        assert set(identities) == set(SERVICES), identities
        for s in result.ir.sidecars:  # compiled as a user would: the Mesh's folders, not the host's
            assert s.tls.certs_dir == "/etc/meshc-certs", s.tls
        certs.write_service_certs(env.certs, TRUST_DOMAIN, identities)
        os.environ["MESHC_OUT"] = str(env.out)
        os.environ["MESHC_CERTS"] = str(env.certs)
        yield env
    finally:
        for app in apps.values():
            app.stop()


@pytest.fixture(scope="session")
def docker_setup(mesh_env) -> list[str]:
    # docker-compose 1.29 has no `up --wait`: readiness is polled on each admin /ready (`docker_mesh`).
    return ["up -d --no-build --no-color"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v --remove-orphans --timeout 5"]


# --------------------------------------------------------------------------
# the running containers
# --------------------------------------------------------------------------


class DockerMesh:
    """The running sidecar containers plus the mesh they serve."""

    def __init__(self, env: MeshEnv, compose):
        self.env = env
        self.compose = compose
        self.ids: dict[str, str] = {}

    def container_id(self, svc: str) -> str:
        if svc not in self.ids:
            got = self.compose("ps", "-q", svc)
            cid = got.stdout.strip()
            if got.returncode != 0 or not cid:
                pytest.fail(f"no container for '{svc}': {got.stderr.strip()}\n{self.logs()}", pytrace=False)
            self.ids[svc] = cid
        return self.ids[svc]

    def inspect(self, svc: str) -> dict:
        got = _run(["docker", "inspect", self.container_id(svc)])
        if got.returncode != 0:
            pytest.fail(f"docker inspect {svc}: {got.stderr.strip()}", pytrace=False)
        return json.loads(got.stdout)[0]

    def state(self, svc: str) -> dict:
        return self.inspect(svc)["State"]

    def logs(self, *services: str, tail: int = 40) -> str:
        try:
            got = self.compose("logs", "--no-color", f"--tail={tail}", *services)
        except subprocess.TimeoutExpired:
            return "(docker-compose logs timed out)"
        return got.stdout + got.stderr

    def fail_with_logs(self, why: str, *services: str) -> None:
        pytest.fail(f"{why}\n=== docker-compose logs {' '.join(services)} ===\n{self.logs(*services)}", pytrace=False)

    def assert_running(self) -> None:
        for svc in SERVICES:
            st = self.state(svc)
            if not st.get("Running"):
                self.fail_with_logs(f"container '{svc}' is not running: status={st.get('Status')} exit={st.get('ExitCode')}", svc)

    def admin_get(self, svc: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.env.admin(svc) + path, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll every sidecar's admin /ready until LIVE (bounded); fail at once if a container exits."""
        deadline = time.monotonic() + timeout
        pending = list(SERVICES)
        last: dict[str, str] = {}
        while pending:
            for svc in list(pending):
                st = self.state(svc)
                if st.get("Status") in ("exited", "dead") or (not st.get("Running") and st.get("Status") != "created"):
                    self.fail_with_logs(
                        f"container '{svc}' exited before it was ready (exit code {st.get('ExitCode')}): bad config?", svc
                    )
                try:
                    code, body = self.admin_get(svc, "/ready", timeout=1.0)
                    last[svc] = f"{code} {body.strip()}"
                    if code == 200 and body.strip() == "LIVE":
                        pending.remove(svc)
                except (OSError, urllib.error.URLError) as exc:
                    last[svc] = repr(exc)
            if pending and time.monotonic() > deadline:
                self.fail_with_logs(f"sidecars not ready after {timeout:.0f}s: {', '.join(f'{s}: {last.get(s)}' for s in pending)}")
            if pending:
                time.sleep(0.1)

    def stats(self, svc: str, prefix: str = "") -> dict[str, int]:
        """Counters and gauges of a sidecar (admin /stats), those whose name starts with `prefix`."""
        code, body = self.admin_get(svc, "/stats?format=json")
        assert code == 200, body
        return {s["name"]: s["value"] for s in json.loads(body).get("stats", []) if "value" in s and s["name"].startswith(prefix)}

    def call(self, caller: str, callee: str, path: str = "/", n: int = 1, **kwargs):
        """`n` requests from `caller`'s app: via its sidecar container's outbound listener, `Host: callee`."""
        host, port = self.env.outbound(caller)
        return send_many(host, port, n, path, host_header=callee, **kwargs)


@pytest.fixture(scope="session")
def docker_mesh(docker_services, mesh_env, compose) -> DockerMesh:
    mesh = DockerMesh(mesh_env, compose)
    mesh.wait_ready()
    return mesh


@pytest.fixture(autouse=True)
def _containers_alive(request, docker_mesh):
    """Before each test: every container still runs. After a failed test: print the containers' logs."""
    docker_mesh.assert_running()
    yield
    failed = any(getattr(getattr(request.node, f"_report_{w}", None), "failed", False) for w in ("setup", "call"))
    if failed:
        print(f"\n=== docker-compose logs (project {request.getfixturevalue('docker_compose_project_name')}) ===")
        print(docker_mesh.logs(tail=80))


__all__ = ["DockerMesh", "HarnessError", "MeshEnv", "wait_until"]
