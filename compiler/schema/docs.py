"""Field documentation of the policy models, as editors show it on hover.

Every model documents each field in an attribute docstring right below it (the language's reference).
Python keeps no such docstring at run time, so they are read from the models' source with `ast`, the way
pydantic's `use_attribute_docstrings` does (which this module does not need: pydantic before 2.7 lacks it).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from functools import lru_cache


@lru_cache(maxsize=None)
def _own_field_docs(cls: type) -> dict[str, str]:
    """`field -> docstring` of the fields `cls` itself declares (not inherited)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source can be read (an interactive session)
        return {}
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        return {}
    docs: dict[str, str] = {}
    body = node.body
    for stmt, after in zip(body, body[1:]):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = reflow(after.value.value)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """`field -> docstring` of every field of model `cls`, inherited ones included (the nearest class wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        out.update(_own_field_docs(klass))
    return out


def class_doc(cls: type) -> str | None:
    """The model's own docstring (not pydantic's nor a base class's), reflowed."""
    doc = cls.__dict__.get("__doc__")
    return reflow(doc) if isinstance(doc, str) and doc.strip() else None


def reflow(doc: str) -> str:
    """A docstring as one line per paragraph and per list item (`- ...`), paragraphs apart by a blank line.

    Source lines are wrapped at the code's width; an editor wraps text to its own window.
    """
    paragraphs: list[list[str]] = [[]]
    for raw in inspect.cleandoc(doc).splitlines():
        line = raw.strip()
        current = paragraphs[-1]
        if not line:
            if current:
                paragraphs.append([])
        elif line.startswith("- ") or not current:
            current.append(line)
        elif current[-1].startswith("- ") and raw == line:  # text after a list, not indented under its item
            paragraphs.append([line])
        else:
            current[-1] += " " + line
    return "\n\n".join("\n".join(p) for p in paragraphs if p)
