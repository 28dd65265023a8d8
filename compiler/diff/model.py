"""The result of `meshc diff`: a list of changes, each in one section, about one subject.

A change is what a reviewer reads on one line: `reviews: rule [any request]: v1 100% -> v1 90%, v2 10%`.
Values are plain JSON values (strings, numbers, booleans, lists, objects, null for "absent"), so the JSON
output is the same data the text and Markdown are printed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SECTIONS = (
    "services",
    "traffic",
    "routes",
    "protections",
    "security",
    "authorization",
    "gateways",
    "externals",
    "mesh",
    "rollout",
)
"""The sections, in the order every format prints them."""

SECTION_TITLES = {
    "services": "Services",
    "traffic": "Traffic moved",
    "routes": "Route rules",
    "protections": "Protections",
    "security": "Security (mTLS, identities, JWT, authorization policies)",
    "authorization": "Authorization: caller -> service pairs",
    "gateways": "Gateways",
    "externals": "External services",
    "mesh": "Mesh settings",
    "rollout": "Rollout: what each sidecar must do",
}

KINDS = ("added", "removed", "changed", "moved")


@dataclass(frozen=True)
class Change:
    section: str
    subject: str
    """The service, gateway, external service or sidecar it is about; `mesh` for Mesh settings."""
    item: str
    """What changed, e.g. `rule [any request]: timeout`; empty when the subject itself was added or removed."""
    kind: str
    """added | removed | changed | moved (a route rule at another position)."""
    before: object = None
    after: object = None

    def as_json(self) -> dict:
        out = {"section": self.section, "subject": self.subject, "item": self.item, "kind": self.kind}
        out["before"] = self.before
        out["after"] = self.after
        return out


@dataclass
class Report:
    old: str
    """How the user named the old side (a directory, or `REV:dir`)."""
    new: str
    changes: list[Change] = field(default_factory=list)

    @property
    def different(self) -> bool:
        return bool(self.changes)

    def sorted(self) -> list[Change]:
        """Sections in SECTIONS order; inside one, subjects sorted, items in the order they were found (rules
        in their new order)."""
        order = {id(c): i for i, c in enumerate(self.changes)}
        return sorted(self.changes, key=lambda c: (SECTIONS.index(c.section), c.subject, order[id(c)]))

    def by_section(self) -> dict[str, list[Change]]:
        out: dict[str, list[Change]] = {}
        for c in self.sorted():
            out.setdefault(c.section, []).append(c)
        return out

    def summary(self) -> dict:
        """Changes per section, and sidecars per action (added, removed, reload, restart; manifests: the
        Kubernetes manifests changed)."""
        counts = {s: len(cs) for s, cs in self.by_section().items()}
        actions: dict[str, int] = {}
        for c in self.changes:
            if c.section == "rollout":
                actions[rollout_action(c)] = actions.get(rollout_action(c), 0) + 1
        return {"changes": len(self.changes), "sections": counts, "sidecars": dict(sorted(actions.items()))}

    def as_json(self) -> dict:
        return {
            "format": "meshc-diff/1",
            "old": self.old,
            "new": self.new,
            "different": self.different,
            "summary": self.summary(),
            "changes": [c.as_json() for c in self.sorted()],
        }


def rollout_action(c: Change) -> str:
    """added | removed | reload | restart for a sidecar; manifests for the Kubernetes manifests."""
    if c.kind in ("added", "removed"):
        return c.kind
    return c.after["action"] if isinstance(c.after, dict) else "manifests"


def plain(value):
    """A policy model, a dataclass or a value as plain JSON values (durations and endpoints as text)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def nested_changes(before, after, path: str = "") -> list[tuple[str, object, object]]:
    """(path, before, after) for every leaf that differs between two plain values.

    Objects are compared key by key (a key missing on one side is null there); lists of objects that all
    have a `name` are compared name by name (`listeners[https].port`); anything else as a whole. A part
    that is absent (null) on one side is one change with the whole other part, not one per leaf.
    """
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after)):
            out += nested_changes(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        return out
    if _named_list(before) and _named_list(after):
        a, b = {x["name"]: x for x in before}, {x["name"]: x for x in after}
        out = []
        for name in sorted(set(a) | set(b)):
            out += nested_changes(a.get(name), b.get(name), f"{path}[{name}]")
        if not out:  # same items, another order
            out.append((f"{path} (order)", [x["name"] for x in before], [x["name"] for x in after]))
        return out
    if _objects(before) and _objects(after) and before and after:
        out = []
        if len(before) == len(after):  # the same rules, some changed
            for i, (a, b) in enumerate(zip(before, after)):
                out += nested_changes(a, b, f"{path}[{i}]")
            return out
        # rules added or removed: each one that is not on the other side, at its position
        out += [(f"{path}[{i}]", a, None) for i, a in enumerate(before) if a not in after]
        out += [(f"{path}[{i}]", None, b) for i, b in enumerate(after) if b not in before]
        return out or [(path, before, after)]
    return [(path, before, after)]


def _objects(value) -> bool:
    return isinstance(value, list) and all(isinstance(x, dict) for x in value)


def _named_list(value) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in value)
        and len({x["name"] for x in value}) == len(value)
    )


def kind_of(before, after) -> str:
    if before is None:
        return "added"
    if after is None:
        return "removed"
    return "changed"
