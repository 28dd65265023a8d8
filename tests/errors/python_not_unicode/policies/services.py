"""A Python string may hold a lone surrogate; no emitted file can (JSON would escape it, Envoy refuse it)."""
from compiler.policy import Route, Service

reviews = Service(name="reviews", port=9080, app_port=19081)
productpage = Service(name="productpage", port=9080, app_port=19080, calls=["reviews"])

route = Route(
    service="reviews",
    rules=[
        {"match": {"headers": [{"name": "x-user", "exact": "caf\udce9"}]}, "to": {"default": 100}},
        {"to": {"default": 100}},
    ],
)
