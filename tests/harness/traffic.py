"""Traffic from inside a caller pod: `python -m harness.podload` in the pod's namespace, read back as samples.

    load = PodLoad(frontend_pod, "reviews", tmp / "load.jsonl", count=1000, seconds=20).start()
    load.wait()                       # or: do something under load, then load.stop()
    by_pod = tally(load.samples(), "pod")

Bounded: podload stops after `count` requests or `seconds` (both capped), and
`stop()`/`close()` end it with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .pod import TESTS_DIR, Pod, pod_env, pod_python
from .podload import MAX_SECONDS
from .util import STOP_TIMEOUT, HarnessError, wait_until


@dataclass(frozen=True)
class PodSample:
    stream: int
    start: float  # time.monotonic() when the request was sent
    at: float  # ... when the answer (or the error) arrived
    status: int  # 0: no HTTP answer
    pod: str | None  # the pod whose app answered
    version: str | None
    error: str = ""
    echo: str | None = None  # the `echo_header` as the app saw it


class PodLoad:
    def __init__(
        self,
        pod: Pod,
        service: str,
        out_file: Path,
        *,
        count: int = 100,
        seconds: float = 30.0,
        headers: dict[str, str] | None = None,
        path: str = "/",
        keepalive: bool = False,
        concurrency: int = 1,
        pause: float = 0.0,
        echo_header: str = "",
        port: int | None = None,
    ):
        if pod.envoy is None:
            raise HarnessError(f"pod {pod.name} has no sidecar to send through")
        self.pod = pod
        self.service = service
        self.out_file = Path(out_file)
        self.seconds = min(seconds, MAX_SECONDS)
        port = port or pod.envoy.outbound[1]
        args = ["--target", f"127.0.0.1:{port}", "--host", service, "--path", path, "--count", str(count),
                "--seconds", str(self.seconds), "--pause", str(pause), "--concurrency", str(concurrency),
                "--out", str(self.out_file)]  # fmt: skip
        for k, v in (headers or {}).items():
            args += ["--header", f"{k}:{v}"]
        if keepalive:
            args.append("--keepalive")
        if echo_header:
            args += ["--echo-header", echo_header]
        self.command = pod_python(pod.netns, "harness.podload", *args)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PodLoad":
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        self.out_file.write_text("")
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, env=pod_env(), cwd=TESTS_DIR,
        )  # fmt: skip
        return self

    def wait(self, timeout: float | None = None) -> "PodLoad":
        """Until podload ends by itself (bounded by its `seconds` plus a margin)."""
        try:
            self.proc.wait(timeout=timeout if timeout is not None else self.seconds + 15)
        except subprocess.TimeoutExpired:
            self.stop()
            raise HarnessError(f"podload in {self.pod.name} did not end in time")
        self._check()
        return self

    def stop(self) -> "PodLoad":
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._check()
        return self

    close = stop

    def _check(self) -> None:
        if self.proc is not None and self.proc.returncode not in (0, None):
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise HarnessError(f"podload in {self.pod.name} failed ({self.proc.returncode}): {err[-2000:]}")

    def samples(self) -> list[PodSample]:
        out = []
        for line in self.out_file.read_text().splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue  # the last line may be half-written while podload runs
            if "status" in doc:
                out.append(PodSample(**doc))
        return out

    def between(self, start: float, end: float | None = None) -> list[PodSample]:
        return [s for s in self.samples() if s.at >= start and (end is None or s.at <= end)]

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        """Until at least `n` answers are recorded (bounded). A load that ended (its count or seconds used up)
        before `n` is an error at once, saying so, rather than a wait that cannot succeed."""

        def enough() -> bool:
            if len(self.samples()) >= n:
                return True
            if self.proc is not None and self.proc.poll() is not None and len(self.samples()) < n:
                raise HarnessError(f"podload in {self.pod.name} ended after {len(self.samples())} requests, "
                                   f"before the {n} waited for: give it a larger count")
            return False

        wait_until(enough, timeout, message=lambda: f"{n} requests from {self.pod.name}")

    def __enter__(self) -> "PodLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def tally(samples: Iterable[PodSample], key: str = "pod") -> dict[str, int]:
    """Count answered (status 200) samples by `pod` or `version`, sorted by name."""
    c = Counter(getattr(s, key) for s in samples if s.status == 200)
    return dict(sorted(c.items(), key=lambda kv: str(kv[0])))


def failures(samples: Iterable[PodSample]) -> list[PodSample]:
    return [s for s in samples if s.status != 200]


def wait_steady(load: PodLoad, predicate, window: float = 0.5, timeout: float = 20.0, message: str = "") -> float:
    """Until every answer of the last `window` seconds satisfies `predicate` (and there are some);
    returns the seconds it took."""
    start = time.monotonic()

    def ok() -> bool:
        recent = load.between(time.monotonic() - window)
        return bool(recent) and all(predicate(s) for s in recent)

    wait_until(ok, timeout, message=message or "steady traffic")
    return time.monotonic() - start
