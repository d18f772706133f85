"""'Did you mean ...?' for misspelled names in YAML the users write (rule files, rule tests).

The fields allowed at a place in a document come from the model's JSON Schema, so a suggestion is
always a field the model accepts there.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`; did you mean 'x'?`, or nothing when no candidate is close."""
    best = close_match(word, candidates)
    return f"; did you mean '{best}'?" if best else ""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follows $ref and picks the non-null branch of an anyOf (Optional[...])."""
    for _ in range(16):
        if "$ref" in node:
            node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
        elif "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            structured = [b for b in branches if "$ref" in b or b.get("type") in ("object", "array")]
            node = (structured or branches or [{}])[0]
        else:
            return node
    return node


def fields_at(schema: dict[str, Any], loc: Sequence[str | int]) -> list[str]:
    """The property names the schema allows in the object that holds `loc`'s last element."""
    defs = schema.get("$defs", {})
    node = schema
    for seg in loc[:-1]:
        node = _resolve(node, defs)
        if isinstance(seg, int):
            node = node.get("items", {})
        elif seg in node.get("properties", {}):
            node = node["properties"][seg]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("patternProperties"):
            node = next(iter(node["patternProperties"].values()))
        else:
            return []
    return list(_resolve(node, defs).get("properties", {}))


def unknown_field(schema: dict[str, Any], loc: Sequence[str | int]) -> str:
    """The message for a field the model forbids: names it and suggests the closest allowed one."""
    name = str(loc[-1]) if loc else "?"
    allowed = fields_at(schema, loc)
    hint = did_you_mean(name, allowed)
    if not hint and allowed:
        hint = "; allowed here: " + ", ".join(allowed)
    return f"unknown field '{name}'{hint}"
