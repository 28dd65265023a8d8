"""The app container of a box pod: a small HTTP/1.1 server that says which pod answered.

    ip netns exec <pod> python -m harness.podapp --service reviews --version v1 --pod reviews-v1-0 \
        --port 9081 --control /path/control.json

Answers every method with JSON `{"service", "version", "pod", "path", "headers"}`
(header names lower-case). Behaviour knobs live in the control file, a JSON
object re-read whenever it changes, so the harness can make a running pod fail
or slow down: `{"status": 500}` answers 500 (same JSON body), `{"delay": 0.2}`
waits that many seconds first. Missing file or keys: 200, no delay.
Listens on 127.0.0.1 by default: the pod's sidecar delivers to 127.0.0.1:<app_port>.
SIGTERM stops it at once (in-flight requests are the sidecar's to drain).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Control:
    """The control file, re-read when its mtime or size changes."""

    def __init__(self, path: str | None):
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.values: dict = {}
        self._lock = threading.Lock()

    def get(self) -> dict:
        if not self.path:
            return {}
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self.values = json.loads(open(self.path).read() or "{}")
                    self._stamp = stamp
                except (OSError, ValueError):
                    pass  # caught mid-write: keep the previous values, retry next request
            return self.values


def handler_for(service: str, version: str, pod: str, control: Control) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the sidecar pools connections to the app
        disable_nagle_algorithm = True  # otherwise a ~40 ms delayed-ACK stall per request
        server_version = "meshc-box-podapp"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            knobs = control.get()
            delay = float(knobs.get("delay", 0) or 0)
            if delay > 0:
                time.sleep(min(delay, 30.0))
            headers: dict[str, str] = {}
            for k, v in self.headers.items():
                k = k.lower()
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            body = json.dumps(
                {"service": service, "version": version, "pod": pod, "path": self.path, "headers": headers}
            ).encode()
            self.send_response(int(knobs.get("status", 200) or 200))
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the sidecar closed a pooled connection: nothing to report
        super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="podapp", description=__doc__.split("\n\n")[0])
    ap.add_argument("--service", required=True)
    ap.add_argument("--version", default="default")
    ap.add_argument("--pod", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--control", default=None, help="JSON file with status/delay knobs")
    args = ap.parse_args(argv)
    server = Server((args.host, args.port), handler_for(args.service, args.version, args.pod, Control(args.control)))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"podapp {args.pod} listening on {args.host}:{args.port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
