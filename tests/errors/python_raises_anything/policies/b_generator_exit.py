def make():
    raise GeneratorExit("closed")


services = make()
