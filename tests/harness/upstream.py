"""Upstream test apps: a threaded HTTP/1.1 server that echoes who it is and records every request."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from .util import STOP_TIMEOUT, wait_until


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
