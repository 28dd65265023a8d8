"""A raw-socket test app: a socketserver handler of the test's own on 127.0.0.1, a free port, one thread.

For apps the stdlib HTTP server cannot play (h2c, websockets, counting connections): the handler reads
its app as `self.server.app` and records what it saw with `app.record(...)`. The `apps` fixture
(tests/conftest.py) starts them and stops every one at teardown.
"""

from __future__ import annotations

import socketserver
import threading


class _ThreadedTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class App:
    """A socketserver app on 127.0.0.1 with a free port, served in a thread; `stop()` at teardown."""

    def __init__(self, handler_cls: type[socketserver.BaseRequestHandler]):
        self.server = _ThreadedTCP(("127.0.0.1", 0), handler_cls)
        self.server.app = self  # type: ignore[attr-defined]
        self.host, self.port = self.server.server_address[:2]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.records: list = []
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def record(self, item) -> None:
        with self.lock:
            self.records.append(item)

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.thread.join(timeout=5)
        self.server.server_close()
