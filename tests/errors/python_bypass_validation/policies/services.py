"""Objects that skip validation are validated again before use; a warning is reported, not leaked."""
import warnings

from compiler.policy import Service, SidecarSettings

warnings.warn("this policy style is deprecated", FutureWarning)

escape = Service.model_construct(name="../x", port=9080, app_port=19080)

ratings = Service(name="ratings", port=9080, app_port=19081, sidecar=SidecarSettings(address="127.0.0.4"))
object.__setattr__(ratings, "port", 70000)
object.__setattr__(ratings.sidecar, "address", "../../etc")

nameless = Service.model_construct(port=9080)


class Calls(list):
    def __iter__(self):
        raise RuntimeError("not today")


unreadable = Service.model_construct(name="unreadable", port=9080, app_port=19082, calls=Calls(["ratings"]))
