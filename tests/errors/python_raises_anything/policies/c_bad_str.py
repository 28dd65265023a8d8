class Broken(Exception):
    def __str__(self):
        raise RuntimeError("cannot describe myself")


raise Broken()
