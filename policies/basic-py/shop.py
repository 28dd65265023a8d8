"""The `basic` example mesh, written in Python instead of YAML.

Module-level policy objects (or lists of them) are what meshc loads; the
compiled output equals the YAML twin's except for the file names in provenance
(`shop.py#Route/reviews/rules[1]` instead of `routes.yaml#Route/reviews/rules[1]`).
"""

from compiler.policy import HeaderMatch, Match, Mesh, Route, RouteRule, Service, SidecarSettings, Version

mesh = Mesh(name="shop", defaults={"timeout": "5s", "connect_timeout": "1s"})

productpage = Service(
    name="productpage",
    port=9080,
    app_port=19080,
    sidecar=SidecarSettings(address="127.0.0.2"),
    calls=["reviews"],
)

reviews = Service(
    name="reviews",
    port=9080,
    sidecar=SidecarSettings(address="127.0.0.3"),
    versions={
        "v1": Version(endpoints=["127.0.0.1:19081"]),
        "v2": Version(endpoints=["127.0.0.1:19082"]),
    },
    calls=["ratings"],
)

ratings = Service(name="ratings", port=9080, app_port=19083, sidecar=SidecarSettings(address="127.0.0.4"))

reviews_route = Route(
    service="reviews",
    rules=[
        RouteRule(match=Match(headers=[HeaderMatch(name="x-user-group", exact="beta")]), to={"v2": 100}),
        RouteRule(to={"v1": 90, "v2": 10}, timeout="3s"),
    ],
)
