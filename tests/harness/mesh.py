"""One live mesh per test: policy, output, upstream apps and sidecars under one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from compiler.build import BuildResult
from compiler.policy import Mesh, Service, SidecarSettings, Version

from .client import Response, send_many
from .policy import compile_policy, write_policy
from .sidecar import EnvoySidecar
from .util import HarnessError, Loopback, envoy_binary
from .upstream import Upstream


class LiveMesh:
    """A test's mesh: policy, output, upstream apps and sidecars under one directory.

        mesh = LiveMesh(tmp_path)                    # the `live_mesh` fixture does this
        v1 = mesh.upstream("reviews", "v1")
        docs = [mesh.mesh_doc(),
                mesh.service("frontend", calls=["reviews"]),
                mesh.service("reviews", versions={"v1": [v1]}),
                Route(service="reviews", rules=[RouteRule(to={"v1": 100})])]
        mesh.build(docs)                              # policy/mesh.yaml -> out/
        front = mesh.start("frontend"); mesh.start("reviews")
        r = mesh.call("frontend", "reviews")          # via frontend's outbound listener
        mesh.close()                                  # the fixture does this

    Calling `build` again rewrites the policy and compiles into the *same* `out/`
    (what a hot reload sees). Each service made by `service()` gets its own
    loopback address and free ports, so meshes never collide.
    """

    def __init__(self, root: Path, *, binary: str | None = None, name: str = "test"):
        self.root = Path(root)
        self.name = name
        self.policy_dir = self.root / "policy"
        self.out = self.root / "out"
        self.logs = self.root / "logs"
        self.binary = binary or envoy_binary()
        self.loopback = Loopback()
        self.upstreams: list[Upstream] = []
        self.sidecars: dict[str, EnvoySidecar] = {}
        self._stopped: list[EnvoySidecar] = []
        self._placements: dict[str, SidecarSettings] = {}
        self._ports: dict[str, tuple[int, int]] = {}
        self.last_build: BuildResult | None = None

    # -- policy helpers -----------------------------------------------------
    def mesh_doc(self, **fields) -> Mesh:
        """The Mesh document (name defaults to the LiveMesh's name)."""
        fields.setdefault("name", self.name)
        return Mesh(**fields)

    def placement(self, service: str) -> SidecarSettings:
        """This service's sidecar settings: own loopback address, free outbound and admin ports (stable per name)."""
        if service not in self._placements:
            addr = self.loopback.address()
            self._placements[service] = SidecarSettings(
                address=addr, outbound_port=self.loopback.port(addr), admin_port=self.loopback.port(addr)
            )
            self._ports[service] = (self.loopback.port(addr), self.loopback.port())
        return self._placements[service]

    def service(
        self,
        name: str,
        *,
        versions: dict[str, Sequence[Upstream | str] | Upstream | Version] | None = None,
        calls: Sequence[str] = (),
        **fields,
    ) -> Service:
        """A Service placed on its own address with free ports.

        `versions` maps a version to its upstream app(s) (or endpoint strings, or a
        Version). Without versions the service has one `default` version whose
        endpoint is a free port on 127.0.0.1 where nothing listens (callers only):
        `app_port` is set (to that port) only when some version lists no endpoints.
        Other Service fields (protocol, default_version, ...) pass through.
        """
        sidecar = self.placement(name)
        port, app_port = self._ports[name]
        fields.setdefault("port", port)
        if "sidecar" not in fields:
            fields["sidecar"] = sidecar
        vs: dict[str, Version] = {}
        for v, spec in (versions or {}).items():
            if isinstance(spec, Version):
                vs[v] = spec
            else:
                items = [spec] if isinstance(spec, (Upstream, str)) else list(spec)
                vs[v] = Version(endpoints=[u.endpoint if isinstance(u, Upstream) else u for u in items])
        if vs:
            fields["versions"] = vs
        if not vs or not all(v.endpoints for v in vs.values()):
            fields.setdefault("app_port", app_port)
        return Service(name=name, calls=list(calls), **fields)

    def write_policy(self, documents: Iterable[Any] | str) -> Path:
        return write_policy(self.policy_dir, documents)

    def build(
        self,
        documents: Iterable[Any] | str | None = None,
        *,
        static: bool = False,
        out: Path | None = None,
        **options: Any,
    ) -> BuildResult:
        """Write `documents` (if given) as the policy and compile it into `out` (default: self.out).

        Other keyword arguments are further `BuildOptions` fields, e.g. `certs_root=str(path)`
        (sidecar S reads its certificates from `<certs_root>/S`).
        """
        if documents is not None:
            self.write_policy(documents)
        self.last_build = compile_policy(self.policy_dir, out or self.out, static=static, **options)
        return self.last_build

    # -- processes ----------------------------------------------------------
    def upstream(self, service: str, version: str = "default", host: str = "127.0.0.1") -> Upstream:
        """A started upstream app (stopped by `close`)."""
        up = Upstream(service, version, host=host).start()
        self.upstreams.append(up)
        return up

    def sidecar(self, service: str, *, out: Path | None = None, **kwargs) -> EnvoySidecar:
        """An EnvoySidecar for `out/<service>` that is not started yet."""
        if service in self.sidecars and self.sidecars[service].running:
            raise HarnessError(f"sidecar '{service}' is already running")
        return EnvoySidecar(service, out or self.out, self.logs, binary=self.binary, **kwargs)

    def start(self, *services: str, out: Path | None = None, require_accepted: bool = True, **kwargs) -> EnvoySidecar:
        """Start the sidecars of `services` (in order) and wait for each; returns the last one."""
        if not services:
            raise ValueError("start: name at least one service")
        last = None
        for name in services:
            sc = self.sidecar(name, out=out, **kwargs)
            if name in self.sidecars:
                self._stopped.append(self.sidecars[name])
            self.sidecars[name] = sc
            last = sc.start(require_accepted=require_accepted)
        return last

    def start_all(self, **kwargs) -> dict[str, EnvoySidecar]:
        """Start a sidecar for every service of the last build."""
        if self.last_build is None:
            raise HarnessError("start_all: build first")
        for s in self.last_build.ir.sidecars:
            self.start(s.service, **kwargs)
        return dict(self.sidecars)

    def __getitem__(self, service: str) -> EnvoySidecar:
        return self.sidecars[service]

    # -- traffic ------------------------------------------------------------
    def call(self, caller: str, callee: str, path: str = "/", n: int = 1, **kwargs) -> list[Response]:
        """`n` requests from `caller`'s app to `callee`: via caller's outbound listener with `Host: callee`."""
        host, port = self.sidecars[caller].outbound
        return send_many(host, port, n, path, host_header=callee, **kwargs)

    def call_one(self, caller: str, callee: str, path: str = "/", **kwargs) -> Response:
        return self.call(caller, callee, path, 1, **kwargs)[0]

    # -- teardown -----------------------------------------------------------
    def close(self) -> None:
        errors = []
        for sc in list(self.sidecars.values()) + self._stopped:
            try:
                sc.stop()
            except Exception as exc:  # noqa: BLE001 - stop everything, report afterwards
                errors.append(exc)
        for up in self.upstreams:
            try:
                up.stop()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(sc.log_tail(lines) for sc in list(self.sidecars.values()) + self._stopped if sc.log_path)

    def __enter__(self) -> "LiveMesh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
