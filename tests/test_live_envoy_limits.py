"""What issue 12 made buildable, live: real Envoys load the files and answer as the policy says.

A service that calls its own global rate-limit service (its sidecar used to get that cluster twice and
refuse the file), text outside the basic plane in a direct response (it used to be a JSON surrogate pair,
which Envoy's YAML reader refuses), and a `%` in a header value (Envoy would read `%...%` as a command,
and refuse a lone `%`): the app receives the header exactly as written.
"""

from __future__ import annotations

import textwrap

import pytest

from harness import policy_yaml

pytestmark = pytest.mark.envoy

ROUTE = """
kind: Route
service: catalog
rules:
  - match: {path: {exact: /hi}}
    respond: {status: 200, body: "héllo 😀\\n"}
  - to: {default: 100}
    request_headers: {set: {x-discount: "50% off %START_TIME%"}}
---
kind: TrafficPolicy
service: catalog
global_rate_limit: {service: ratelimit, domain: shop, failure_mode_deny: false}
"""


def test_emoji_body_percent_header_and_own_rate_limit_service(live_mesh):
    app = live_mesh.upstream("catalog")
    limiter = live_mesh.upstream("ratelimit")
    services = [
        live_mesh.service("frontend", calls=["catalog"]),
        live_mesh.service("catalog", versions={"default": app}, calls=["ratelimit"]),
        live_mesh.service("ratelimit", versions={"default": limiter}, protocol="grpc"),
    ]
    live_mesh.build(policy_yaml([live_mesh.mesh_doc(), *services]) + "---\n" + textwrap.dedent(ROUTE).strip() + "\n")
    live_mesh.start("frontend")
    live_mesh.start("catalog")  # loads clusters.yaml with outbound|ratelimit|default once

    r = live_mesh.call_one("frontend", "catalog", "/hi")
    assert (r.status, r.body) == (200, "héllo 😀\n".encode())

    r = live_mesh.call_one("frontend", "catalog", "/items")
    assert r.status == 200, (r.status, r.body[:200])
    [req] = app.requests
    assert req.headers["x-discount"] == "50% off %START_TIME%"
