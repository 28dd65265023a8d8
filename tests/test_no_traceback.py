"""meshc never ends in a traceback: what tests/errors/ cannot hold as data, and the internal-error path.

The error cases as data (bad YAML tags, huge numbers, Python policies that exit or raise anything,
objects that skipped validation, escape sequences in names) are folders under tests/errors/.
"""

from __future__ import annotations

from compiler.check import check
from compiler.policy import Mesh, PolicySet, Service


def test_versions_on_one_app_port_are_one_bind():
    """Two versions without endpoints are the one app on 127.0.0.1:<app_port>, not two apps on one port (no E213)."""
    mesh = Mesh(name="m")
    svc = Service(name="a", port=1000, app_port=2000, sidecar={"address": "127.0.0.2"}, versions={"v1": {}, "v2": {}})
    assert [d for d in check(PolicySet((mesh, svc))) if d.code == "E213"] == []
    other = Service(name="b", port=1000, app_port=2000, sidecar={"address": "127.0.0.3"})
    (clash,) = [d for d in check(PolicySet((mesh, svc, other))) if d.code == "E213"]
    assert clash.message == (
        "127.0.0.1:2000 is bound twice on this host: by the app 'a' version 'v1' and by the app 'b' version 'default'"
    )
