"""What the import builds: meshc documents as plain data, each with the comments that explain a choice."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from compiler.importer.read import Problem, Resource

NOT_YET = "not yet in meshc"


@dataclass
class Doc:
    """One meshc document (kind first), the file it goes to, and comments written above it."""

    file: str
    body: dict
    comments: list[str] = field(default_factory=list)


@dataclass
class Workload:
    """A Kubernetes Service (and its Deployments) that becomes a meshc Service."""

    name: str
    namespace: str
    service: dict
    source: Resource
    labels: dict = field(default_factory=dict)
    """The Service's selector: what Istio selectors match."""
    service_account: str | None = None
    version_labels: dict[str, dict] = field(default_factory=dict)
    """Deployment version label value -> the Deployment's labels."""
    pods: list[tuple[str, dict]] = field(default_factory=list)
    """Each Deployment the Service selects: its name and its pods' labels (what `sourceLabels` match)."""
    subsets: dict[str, dict] = field(default_factory=dict)
    """meshc version -> the labels of the DestinationRule subset it came from (empty without subsets)."""


@dataclass
class External:
    name: str
    hosts: tuple[str, ...]
    doc: Doc
    source: Resource


class Context:
    """Everything read so far, the documents built, and what could not be carried over."""

    def __init__(self, mesh_name: str):
        self.mesh: dict = {"kind": "Mesh", "name": mesh_name}
        self.mesh_comments: list[str] = []
        self.workloads: dict[str, Workload] = {}
        self.externals: dict[str, External] = {}
        self.docs: dict[str, list[Doc]] = {}
        """Per service name: its Route, TrafficPolicy, AuthorizationPolicy, RequestAuthentication documents."""
        self.edge: list[Doc] = []
        self.gateway_selectors: dict[str, dict] = {}
        """meshc Gateway name -> the labels of the pods its Istio Gateway selects (`istio: ingressgateway`)."""
        self.gateway_rules: dict[str, list] = {}
        """Per service: the Route rules of VirtualServices bound to gateways only (gateway_rules.py)."""
        self.pending_callers: list = []
        """Matches on the calling workload, given their `callers` once every document is built (callers.py)."""
        self.problems: list[Problem] = []
        self.notes: list[Problem] = []

    def refuse(self, res: Resource, path: tuple, message: str) -> None:
        """A field of the input that is not carried over."""
        self.problems.append(Problem(res.at(*path), f"{res.title}: {_dotted(path)}: {message}"))

    def note(self, res: Resource, path: tuple, message: str) -> None:
        """Carried over with a choice the user should look at (not a failure)."""
        self.notes.append(Problem(res.at(*path), f"{res.title}: {_dotted(path)}: {message}"))

    def add(self, service: str, doc: Doc) -> None:
        self.docs.setdefault(service, []).append(doc)

    # ------------------------------------------------------------------ hosts

    def resolve(self, host: str, namespace: str) -> str | None:
        """A host in a Kubernetes form (`reviews`, `reviews.default`, `reviews.default.svc[.cluster.local]`),
        or an ExternalService's host -> the meshc name; None if nothing of that name was read."""
        host = host.split("/", 1)[1] if "/" in host else host
        host = host.lower().rstrip(".")
        for ext in self.externals.values():
            if host in ext.hosts:
                return ext.name
        parts = host.split(".")
        name, ns = parts[0], namespace
        if len(parts) >= 2:
            rest = ".".join(parts[2:])
            if rest not in ("", "svc", "svc.cluster.local"):
                return None
            ns = parts[1]
        wl = self.workloads.get(name)
        return name if wl is not None and wl.namespace == ns else None

    def by_labels(self, labels: dict, namespace: str) -> list[Workload]:
        """The workloads an Istio `selector.matchLabels` picks (by their Service's selector or Deployments' labels)."""
        out = []
        for wl in self.workloads.values():
            if wl.namespace != namespace:
                continue
            known = dict(wl.labels)
            if all(known.get(k) == v for k, v in labels.items()):
                out.append(wl)
        return out

    def by_account(self, namespace: str, account: str) -> str | None:
        for wl in self.workloads.values():
            if wl.namespace == namespace and (wl.service_account or wl.name) == account:
                return wl.name
        return None


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


_NAME_BAD = re.compile(r"[^a-z0-9-]+")


def name_of(text: str) -> str:
    """A meshc Name from a host or a Kubernetes name (`api.example.com` -> `api-example-com`)."""
    return _NAME_BAD.sub("-", text.lower()).strip("-")[:63] or "unnamed"


def duration(text, res: Resource, path: tuple, ctx: Context) -> str | None:
    """An Istio duration (`1.5s`, `100ms`, `2m`, `1h`) as meshc writes it (whole milliseconds)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)", str(text).strip())
    if not m:
        ctx.refuse(res, path, f"{text!r} is not a duration")
        return None
    scale = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1, "us": 0.001, "µs": 0.001, "ns": 0.000001}[m[2]]
    ms = float(m[1]) * scale
    if ms != int(ms):
        ctx.refuse(res, path, f"{text}: meshc durations are whole milliseconds")
        return None
    ms = int(ms)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def percent(value, res: Resource, path: tuple, ctx: Context) -> int | None:
    """An Istio `percentage: {value: 12.5}` or `percent: 12` as a meshc whole percentage."""
    if isinstance(value, dict):
        value = value.get("value", 0)
    try:
        number = float(value)
    except (TypeError, ValueError):
        ctx.refuse(res, path, f"{value!r} is not a percentage")
        return None
    if not 0 <= number <= 100:
        ctx.refuse(res, path, f"{number} is not a percentage from 0 to 100")
        return None
    if number.is_integer():
        return int(number)
    if number != round(number, 4):
        ctx.refuse(res, path, f"the percentage {number}: meshc takes at most 4 decimals (Envoy counts in millionths)")
        return None
    return number
