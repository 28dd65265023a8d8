from compiler.policy import Service

reviews = Service(name="reviews", port=9080, app_port=19081)
ratings = Service(name="ratings", port=9080, app_port=70000)
