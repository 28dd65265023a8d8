from compiler.policy import Service

reviews = Service(name="reviews", port=10**5000, app_port=1000)
