"""Services defined in Python: module-level policy objects."""

from compiler.policy import Service

productpage = Service(name="productpage", port=9080, app_port=19080, calls=["reviews"])

reviews = Service(
    name="reviews",
    port=9081,
    app_port=190810,
)
