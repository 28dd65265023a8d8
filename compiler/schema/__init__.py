"""`meshc schema`: a JSON Schema of policy documents, for editors (yaml-language-server) and tools.

    from compiler.schema import policy_schema, render
    render(policy_schema())    # the text of schema/meshc.schema.json

The schema is JSON Schema draft-07 (what every yaml-language-server release reads; 2019-09 and 2020-12
only since 1.20) and describes ONE document: a policy file holds several, each checked on its own.
It sees what a single document can get wrong (unknown fields, types, ranges, patterns, enums, exactly-one
choices); what needs the whole mesh (a Route to an unknown service, weights adding up to 100) is for
`meshc check`.
"""

from __future__ import annotations

import json

from compiler.schema.build import DRAFT, document_schema

COMMITTED = "schema/meshc.schema.json"
"""Where the repository keeps the exported schema (editors point at its raw URL); a test keeps it current."""


def policy_schema() -> dict:
    return document_schema()


def render(schema: dict) -> str:
    """The schema as committed: 2-space JSON, UTF-8, keys in a fixed order, one final newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


__all__ = ["COMMITTED", "DRAFT", "policy_schema", "render"]
