"""Steady background traffic through running sidecars, recorded request by request.

A policy switch is judged by what the traffic around it saw: `SteadyLoad` keeps
sending requests from callers' apps (one stream per caller, each request on a
fresh connection to the caller's sidecar, as a short-lived app client would)
while a test rebuilds the mesh, and records every outcome with its time. The
load is bounded in count and in time and stops by itself.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field

from .util import REQUEST_TIMEOUT

MAX_REQUESTS = 20_000
"""Per stream, whatever the test asks."""
MAX_SECONDS = 180.0
"""Per stream, whatever the test asks."""


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() when the answer (or the error) arrived
    caller: str
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    version: str | None  # the answering app's version (upstream JSON), if an app answered
    chosen: str | None  # the app's view of the caller's choice: the stream's `chosen_header` as the app saw it
    error: str = ""


@dataclass
class Stream:
    caller: str
    host: str
    port: int
    callee: str
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    pause: float = 0.005
    chosen_header: str = "x-chosen"
    """A request header the caller's route sets to name the version it chose (tests set it per rule)."""


class SteadyLoad:
    """Background request streams; `with SteadyLoad(streams) as load: ...` then read `load.samples`."""

    def __init__(self, streams: list[Stream], *, max_requests: int = MAX_REQUESTS, max_seconds: float = MAX_SECONDS):
        self.streams = streams
        self.max_requests = min(max_requests, MAX_REQUESTS)
        self.max_seconds = min(max_seconds, MAX_SECONDS)
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in streams]

    def __enter__(self) -> "SteadyLoad":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=REQUEST_TIMEOUT + 2)

    def _run(self, s: Stream) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            sample = _one(s)
            with self._lock:
                self.samples.append(sample)
            time.sleep(s.pause)

    def between(self, start: float, end: float | None = None, caller: str | None = None) -> list[Sample]:
        with self._lock:
            return [
                x for x in self.samples
                if x.at >= start and (end is None or x.at <= end) and (caller is None or x.caller == caller)
            ]

    def count(self) -> int:
        with self._lock:
            return len(self.samples)


def _one(s: Stream) -> Sample:
    conn = http.client.HTTPConnection(s.host, s.port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("GET", s.path, headers={"Host": s.callee, **s.headers})
        resp = conn.getresponse()
        body = resp.read()
        version = chosen = None
        if resp.status == 200:
            try:
                doc = json.loads(body)
                version = doc.get("version")
                chosen = {k.lower(): v for k, v in (doc.get("headers") or {}).items()}.get(s.chosen_header)
            except ValueError:
                pass
        return Sample(time.monotonic(), s.caller, resp.status, version, chosen)
    except (OSError, http.client.HTTPException) as exc:
        return Sample(time.monotonic(), s.caller, 0, None, None, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
