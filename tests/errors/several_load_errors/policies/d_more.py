from compiler.policy import Service, Version

details = Service(
    name="details",
    port=9080,
    app_port=19084,
    versions={"v1": Version(endpoints=["localhost:19084", "[::1]:99999"])},
    call=["ratings"],
)
