"""Envoy sidecars: one real `envoy` process per `OUT/<service>/bootstrap.yaml`, with admin helpers."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from compiler.emit.bootstrap import ENVOY_ARGS

from .policy import load_json_yaml
from .util import POLL_INTERVAL, READY_TIMEOUT, REQUEST_TIMEOUT, STOP_TIMEOUT, HarnessError, envoy_binary, wait_until


_STAT_LINE = re.compile(r"^([^:\s][^:]*): (-?\d+)$")
_XDS_STAT = re.compile(r"^(cluster_manager\.cds|listener_manager\.lds|http\.[^.]+\.rds\.[^.]+)\.(update_\w+)$")


class EnvoySidecar:
    """One real Envoy running `OUT/<service>/bootstrap.yaml`.

    The admin address comes from the bootstrap itself. Logs go to
    `log_dir/envoy-<service>[-n].log`; failures quote their tail.
    """

    def __init__(
        self,
        service: str,
        out: Path,
        log_dir: Path,
        *,
        binary: str | None = None,
        log_level: str = "warning",
        concurrency: int = 1,
        extra_args: Sequence[str] = (),
    ):
        self.service = service
        self.config_dir = Path(out) / service
        self.bootstrap = self.config_dir / "bootstrap.yaml"
        self.log_dir = Path(log_dir)
        self.binary = binary or envoy_binary()
        self.log_level = log_level
        self.concurrency = concurrency
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._log_fh = None
        boot = load_json_yaml(self.bootstrap)
        sa = boot["admin"]["address"]["socket_address"]
        self.admin_host: str = sa["address"]
        self.admin_port: int = int(sa["port_value"])
        self.static = "dynamic_resources" not in boot
        dynamic = boot.get("dynamic_resources") or {}
        self.cds_file: Path | None = _path_source(dynamic.get("cds_config") or {})
        """The file the sidecar reads its clusters from (None in static mode)."""
        self.lds_file: Path | None = _path_source(dynamic.get("lds_config") or {})
        """The file the sidecar reads its listeners from (None in static mode)."""
        self.rds_files: dict[str, Path] = {}
        """Route configuration name -> the file the sidecar reads it from, for every RDS subscription."""
        self.listeners: dict[str, tuple[str, int]] = {}
        """Listener name -> (host, port), as the sidecar's output says (re-read by `reload_listeners`)."""
        self.reload_listeners()

    def listener_resources(self) -> list[dict]:
        """The listeners this sidecar's output defines: listeners.yaml (file-based LDS), else the static bootstrap."""
        boot = load_json_yaml(self.bootstrap)
        listeners = list(boot.get("static_resources", {}).get("listeners", []))
        dynamic = boot.get("dynamic_resources") or {}
        lds = _path_source(dynamic.get("lds_config") or {})
        if lds is not None:
            # The bootstrap names where the sidecar is deployed; the file is in the output folder next to it.
            listeners += load_json_yaml(self.config_dir / lds.name).get("resources", [])
        return listeners

    def reload_listeners(self) -> None:
        """Re-read listener addresses and RDS subscriptions from the output (after a rebuild)."""
        listeners = self.listener_resources()
        self.rds_files = {}
        for listener in listeners:
            for chain in listener.get("filter_chains", []):
                for f in chain.get("filters", []):
                    rds = (f.get("typed_config") or {}).get("rds")
                    if rds:
                        self.rds_files[rds["route_config_name"]] = _path_source(rds.get("config_source") or {})
        self.listeners = {
            l["name"]: (l["address"]["socket_address"]["address"], int(l["address"]["socket_address"]["port_value"]))
            for l in listeners
        }

    # -- lifecycle --------------------------------------------------------
    @property
    def command(self) -> list[str]:
        return [
            self.binary,
            "-c", str(self.bootstrap),
            # No shared memory, so any number of Envoys can run side by side without --base-id juggling.
            "--disable-hot-restart",
            "--reject-unknown-dynamic-fields",
            *ENVOY_ARGS,  # as a deployment starts a sidecar (README: deploying the output)
            "--concurrency", str(self.concurrency),
            "-l", self.log_level,
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *, timeout: float = READY_TIMEOUT, require_accepted: bool = True) -> "EnvoySidecar":
        """Start and wait (bounded) until /ready says LIVE.

        With `require_accepted`, a dynamic sidecar must also have accepted its
        clusters.yaml and every routes subscription (no `update_rejected`, an
        `update_success` each); otherwise this fails with the stats and the log.
        """
        self.launch()
        self.wait_live(time.monotonic() + timeout, require_accepted=require_accepted)
        return self

    @property
    def label(self) -> str:
        """How failures name this sidecar."""
        return f"envoy for '{self.service}'"

    def _new_log(self) -> Path:
        return _fresh_path(self.log_dir / f"envoy-{self.service}.log")

    def launch(self) -> "EnvoySidecar":
        """Start the process without waiting (see `wait_live`)."""
        if self.proc is not None:
            raise HarnessError(f"{self.label} is already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._new_log()
        self._log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True,
            env=self.process_env(),
        )
        return self

    def process_env(self) -> dict[str, str] | None:
        """The environment Envoy starts with; None: the test process's own."""
        return None

    def wait_live(self, deadline: float, *, require_accepted: bool = True) -> None:
        """Wait (until `deadline`, time.monotonic()) for /ready LIVE, then check the config was accepted."""
        while True:
            code = self.proc.poll()
            if code is not None:
                raise HarnessError(f"{self.label} exited with {code} before it was ready\n{self.log_tail()}")
            if self._ready():
                break
            if time.monotonic() >= deadline:
                raise HarnessError(f"{self.label} not LIVE in time\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)
        if require_accepted and not self.static:
            problems = self.config_problems()
            if problems:
                raise HarnessError(f"{self.label} did not accept its config: {'; '.join(problems)}\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            status, body = self.admin_get("/ready", timeout=1.0)
        except OSError:
            return False
        return status == 200 and body.strip() == "LIVE"

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_TIMEOUT)
            code = self.proc.returncode
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        return code

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- {self.log_path} (last {len(tail)} lines) ---\n" + "\n".join(tail)

    # -- listeners ----------------------------------------------------------
    def listener(self, name: str) -> tuple[str, int]:
        """(host, port) of a listener by name ('inbound', 'outbound', ...), from the sidecar's output."""
        return self.listeners[name]

    @property
    def inbound(self) -> tuple[str, int]:
        return self.listeners["inbound"]

    @property
    def outbound(self) -> tuple[str, int]:
        return self.listeners["outbound"]

    # -- admin --------------------------------------------------------------
    def admin_get(self, path: str, timeout: float = REQUEST_TIMEOUT) -> tuple[int, str]:
        return self._admin("GET", path, timeout)

    def admin_post(self, path: str, timeout: float = REQUEST_TIMEOUT) -> tuple[int, str]:
        return self._admin("POST", path, timeout)

    def _admin(self, method: str, path: str, timeout: float) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.admin_host, self.admin_port, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def admin_json(self, path: str) -> Any:
        status, body = self.admin_get(path)
        if status != 200:
            raise HarnessError(f"admin {path} on '{self.service}': HTTP {status}: {body[:500]}")
        return json.loads(body)

    def stats(self, filter: str | None = None) -> dict[str, int]:  # noqa: A002
        """Counters and gauges (integers only) from /stats, optionally filtered by a regex."""
        path = "/stats" + (f"?filter={_quote(filter)}" if filter else "")
        status, body = self.admin_get(path)
        if status != 200:
            raise HarnessError(f"admin {path} on '{self.service}': HTTP {status}")
        out = {}
        for line in body.splitlines():
            m = _STAT_LINE.match(line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def stat(self, name: str, default: int = 0) -> int:
        """One counter or gauge by exact name (`default` if Envoy has not created it)."""
        return self.stats(filter=f"^{re.escape(name)}$").get(name, default)

    def wait_for_stat(self, name: str, predicate: Callable[[int], bool], timeout: float = 10.0) -> int:
        holder: list[int] = []

        def check() -> bool:
            holder[:] = [self.stat(name)]
            return predicate(holder[0])

        wait_until(check, timeout, message=lambda: f"stat {name} on '{self.service}' (now {holder[0] if holder else '?'})")
        return holder[0]

    def cluster_stats(self, cluster: str) -> dict[str, int]:
        """The counters and gauges of one cluster, by their name after `cluster.<cluster>.`."""
        prefix = f"cluster.{cluster}."
        return {k[len(prefix):]: v for k, v in self.stats(rf"^{re.escape(prefix)}").items()}

    def health_flags(self, cluster: str) -> dict[str, str]:
        """Endpoint 'host:port' -> its health_flags in `cluster`, from admin /clusters (text format)."""
        status, body = self.admin_get("/clusters")
        assert status == 200, body[:300]
        out = {}
        for line in body.splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
                out[parts[1]] = parts[3]
        return out

    def server_info(self) -> dict:
        return self.admin_json("/server_info")

    def cluster_names(self) -> set[str]:
        """Every cluster the sidecar runs (admin /clusters)."""
        return {c["name"] for c in self.admin_json("/clusters?format=json").get("cluster_statuses", [])}

    def config_dump(self, resource: str | None = None) -> dict:
        return self.admin_json("/config_dump" + (f"?resource={resource}" if resource else ""))

    def dynamic_clusters(self) -> dict[str, dict]:
        """name -> {"version_info", "cluster"} of the active dynamic (CDS) clusters."""
        configs = self.config_dump("dynamic_active_clusters").get("configs", [])
        return {c["cluster"]["name"]: c for c in configs}

    def dynamic_route_configs(self) -> dict[str, dict]:
        """name -> {"version_info", "route_config"} of the RDS route configurations Envoy accepted."""
        configs = self.config_dump("dynamic_route_configs").get("configs", [])
        return {c["route_config"]["name"]: c for c in configs if "route_config" in c}

    def xds_stats(self) -> dict[str, int]:
        """`update_*` counters of CDS, LDS and every RDS subscription."""
        return {k: v for k, v in self.stats(filter=r"update_").items() if _XDS_STAT.match(k)}

    def config_problems(self) -> list[str]:
        """Why the file-based config is not (fully) in effect; empty when CDS, LDS and every RDS accepted an update."""
        stats = self.xds_stats()
        problems = []
        subscriptions = {_XDS_STAT.match(k).group(1) for k in stats}
        for sub in sorted(subscriptions):
            rejected = stats.get(f"{sub}.update_rejected", 0)
            success = stats.get(f"{sub}.update_success", 0)
            if rejected:
                problems.append(f"{sub}.update_rejected={rejected}")
            if not success:
                problems.append(f"{sub}.update_success=0")
        rejected_lines = [l for l in self.log_text().splitlines() if "rejected" in l]
        if problems and rejected_lines:
            problems.append("log: " + rejected_lines[-1].split("] ", 2)[-1])
        return problems

    def __repr__(self) -> str:
        return f"EnvoySidecar({self.service}, pid={self.pid}, admin={self.admin_host}:{self.admin_port})"


def _path_source(config_source: dict) -> Path | None:
    path = (config_source.get("path_config_source") or {}).get("path") or config_source.get("path")
    return Path(path) if path else None


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _fresh_path(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(2, 1000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise HarnessError(f"too many log files like {path}")
