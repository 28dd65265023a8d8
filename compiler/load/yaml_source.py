"""YAML text -> plain data plus a `field path -> Source` index.

We compose (not construct) with PyYAML so that every node keeps its mark,
then build plain data ourselves. That is also where the language's YAML
rules live:

- anchors and aliases are refused (no policy needs them, and refusing the
  first reuse of a node defuses alias bombs before anything is expanded);
- duplicate keys are errors (PyYAML would silently keep the last one);
- only the standard scalar types; keys are strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from compiler.diagnostics import Diagnostic, Source

try:  # the C composer is several times faster; same nodes, same marks
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_SCALAR_TAGS = {
    _STR,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
MAX_DEPTH = 64
"""Deeper mappings and lists are refused: the deepest policy field is about ten levels down, and building
a thousand levels would exhaust Python's stack."""
MAX_DIGITS = 4300
"""Longer numbers are refused: no field needs them, and Python will not convert them to text (its int limit)."""
_TEXT_TAGS = {"tag:yaml.org,2002:timestamp"}  # kept as text: dates mean nothing to the language
_constructor = SafeConstructor()
_COLLECTION_TAGS = {MappingNode: "tag:yaml.org,2002:map", SequenceNode: "tag:yaml.org,2002:seq"}


@dataclass
class RawDocument:
    """One YAML document as plain data, with where each field came from.

    `positions` records where each path is *named* (the mapping key, or the
    item of a sequence); `values` where its value starts, for errors about
    the value itself (a wrong type can sit on the line after its key).
    """

    data: object
    source: Source
    positions: dict[tuple, Source]
    values: dict[tuple, Source] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, diag: Diagnostic):
        self.diag = diag


def _tag(tag: str) -> str:
    """A tag as it is written: `!!set` for the standard ones, `!Foo` for the others."""
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _src(file: str, node) -> Source:
    mark = node.start_mark
    return Source(file, mark.line + 1, mark.column + 1)


# libyaml's wording for the most common slips, with what usually causes them
_HINTS = {
    "mapping values are not allowed in this context": "check the indentation of this line, "
    "or quote a value that contains ': '",
}
_ALIAS_MESSAGE = "anchors and aliases (&name / *name) are not allowed in policies; write the value out"


def _first_alias(text: str, file: str) -> Source | None:
    """Where the first alias (`*name`) of `text` is; the parser stops right there."""
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                return _src(file, event)
    except yaml.YAMLError:
        pass
    return None


class _Builder:
    def __init__(self, file: str, text: str):
        self.file = file
        self.text = text
        self.seen: set[int] = set()
        self.positions: dict[tuple, Source] = {}
        self.values: dict[tuple, Source] = {}

    def _visit(self, node) -> None:
        """Refuse a node met twice: that is an alias, so refuse it before anything is expanded."""
        if id(node) in self.seen:
            # The composer hands back the anchored node itself; report the alias, which
            # is the first reuse in document order (no earlier document had one).
            at = _first_alias(self.text, self.file) or _src(self.file, node)
            raise _Refused(Diagnostic("E002", _ALIAS_MESSAGE, at))
        self.seen.add(id(node))

    def build(self, node, path: tuple):
        self._visit(node)
        if len(path) > MAX_DEPTH:
            raise _Refused(
                Diagnostic("E016", f"nested more than {MAX_DEPTH} levels deep (no policy field is)", _src(self.file, node))
            )
        self.values[path] = _src(self.file, node)
        if not isinstance(node, ScalarNode) and node.tag != _COLLECTION_TAGS[type(node)]:
            # `!Foo {...}` or `!!set {a}` would otherwise be read as a plain mapping, the tag ignored
            what = "mapping" if isinstance(node, MappingNode) else "list"
            raise _Refused(Diagnostic("E004", f"unsupported YAML tag {_tag(node.tag)} on a {what}", _src(self.file, node)))
        if isinstance(node, MappingNode):
            out: dict = {}
            for key_node, value_node in node.value:
                self._visit(key_node)  # an anchored key can be aliased as a value
                # Keys are names, so a plain key is its text: `on:` and `yes:` are keys, not YAML 1.1 booleans.
                if not isinstance(key_node, ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                    raise _Refused(Diagnostic("E004", "mapping keys must be plain strings", _src(self.file, key_node)))
                key = key_node.value
                if key in out:
                    first = self.positions[path + (key,)]
                    raise _Refused(
                        Diagnostic(
                            "E003",
                            f"duplicate key '{key}' (first at line {first.line})",
                            _src(self.file, key_node),
                        )
                    )
                self.positions[path + (key,)] = _src(self.file, key_node)
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self.positions[path + (i,)] = _src(self.file, item)
                items.append(self.build(item, path + (i,)))
            return items
        if node.tag in _SCALAR_TAGS:
            return self._scalar(node)
        if node.tag in _TEXT_TAGS:
            return node.value
        raise _Refused(Diagnostic("E004", f"unsupported YAML tag {_tag(node.tag)}", _src(self.file, node)))


    def _scalar(self, node):
        """The value of a scalar; a value its explicit tag cannot read (`!!int "abc"`) is an error, not a crash."""
        if node.tag in _NUMBER_TAGS and sum(c.isdigit() for c in node.value) > MAX_DIGITS:
            raise _Refused(
                Diagnostic("E012", f"a number with more than {MAX_DIGITS} digits", _src(self.file, node))
            )
        try:
            if node.tag == _NULL and node.value not in ("", "~", "null", "Null", "NULL"):
                raise ValueError(node.value)  # PyYAML would read any text tagged !!null as null
            return _constructor.yaml_constructors[node.tag](_constructor, node)
        except (ValueError, KeyError, IndexError, TypeError, ArithmeticError, yaml.YAMLError):
            kind = node.tag.rsplit(":", 1)[-1]
            raise _Refused(
                Diagnostic("E011", f"{node.value!r} is not a valid {kind} (tagged !!{kind})", _src(self.file, node))
            ) from None


def parse_yaml(text: str, file: str) -> tuple[list[RawDocument], list[Diagnostic]]:
    """Split a file into documents. Stops at the first syntax error of the file."""
    docs: list[RawDocument] = []
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            if node is None:
                continue
            builder = _Builder(file, text)
            try:
                data = builder.build(node, ())
            except _Refused as refused:
                return docs, [refused.diag]
            if data is None:
                continue
            docs.append(RawDocument(data, _src(file, node), builder.positions, builder.values))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Source(file, mark.line + 1, mark.column + 1) if mark else Source(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if problem in _HINTS:
            problem += f" ({_HINTS[problem]})"
        elif exc.problem and exc.context:
            # e.g. an unclosed '[' is only noticed lines later: say where it was opened
            problem += f" ({exc.context}"
            ctx = exc.context_mark
            if ctx is not None and (ctx.line, ctx.column) != (mark.line, mark.column):
                problem += f" that starts at line {ctx.line + 1}, column {ctx.column + 1}"
            problem += ")"
        return docs, [Diagnostic("E001", f"invalid YAML: {problem}", where)]
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        return docs, [_reader_error(exc, text, file)]
    except yaml.YAMLError as exc:  # pragma: no cover - every other error carries a mark
        return docs, [Diagnostic("E001", f"invalid YAML: {exc}", Source(file, 1, 1))]
    return docs, []


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: str) -> Diagnostic:
    """Where the refused character is (the reader only knows its offset), and which one it is."""
    position = exc.position if isinstance(exc.position, int) and 0 <= exc.position <= len(text) else 0
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    char = exc.character
    point = ord(char) if isinstance(char, str) and len(char) == 1 else char if isinstance(char, int) else None
    code = "a character" if point is None else f"character U+{point:04X}"
    return Diagnostic(
        "E001",
        f"invalid YAML: {code} is not allowed in YAML text (in a double-quoted string, write it as an escape)",
        Source(file, line, column),
    )
