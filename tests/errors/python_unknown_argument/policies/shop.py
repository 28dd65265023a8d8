from compiler.policy import Route, RouteRule, Service

ratings = Service(name="ratings", port=9080, app_port=19083)

reviews = Service(
    name="reviews",
    port=9080,
    app_port=19081,
    cals=["ratings"],
)

routes = [Route(service="ratings", rules=[RouteRule(to={"default": 100})])]
