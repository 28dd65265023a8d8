from compiler.policy import Service


class Port:
    def __repr__(self):
        raise SystemExit(0)


ratings = Service(name="ratings", port=Port(), app_port=1000)
