"""Safe YAML loading that remembers the line of every value, so errors can say file:line.

Only plain YAML data is built (no tags, no aliases: an alias bomb or a python/object tag is rejected
before anything is constructed).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000

Path = tuple[str | int, ...]


class YamlError(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def load_yaml(text: str) -> tuple[Any, dict[Path, int]]:
    """Returns (data, lines): lines maps a path like ('groups', 0, 'rules', 1) to a 1-based line."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise YamlError(f"file is larger than {MAX_FILE_BYTES // 1024} KiB", 1)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        raise YamlError(_syntax_message(text, str(err.problem or err), line), line) from None
    except yaml.YAMLError as err:
        raise YamlError(f"YAML: {err}", None) from None
    except RecursionError:  # found by tests/reliability: '- - - - ...' 50k deep crashed the parser
        raise YamlError("nesting is too deep", 1) from None
    lines: dict[Path, int] = {}
    if node is None:
        return None, lines
    try:
        data = _build(node, (), lines, set())
    except RecursionError:
        raise YamlError("nesting is too deep", 1) from None
    return data, lines


# What the parser says when a line is indented wrong (it notices on that line or the next).
_INDENTATION = ("block end", "mapping values are not allowed", "expected key", "block mapping start")


def _syntax_message(text: str, problem: str, line: int | None) -> str:
    """The parser's words, with the rule the line is in (the nearest `- id:` above it) and, for what
    is usually an indentation mistake, where to look: a growth PM reads this, not a YAML grammar."""
    about = ""
    if line is not None:
        above = text.splitlines()[:line]
        for n in range(len(above) - 1, -1, -1):
            stripped = above[n].strip()
            if stripped.startswith("- id:"):
                about = _item_named(above, n, stripped.removeprefix("- id:"))
                break
    hint = ""
    if any(k in problem for k in _INDENTATION):
        hint = "; check the indentation of this line and the line above it (spaces, not tabs)"
    return f"{about}YAML syntax: {problem}{hint}"


# The lists whose items are named by an `id` (the key above them), as a message names such an item.
_ID_LISTS = {"rules:": "rule", "groups:": "group", "plans:": "plan"}


def _item_named(lines: list[str], n: int, raw_id: str) -> str:
    """ "rule seats-80: " for the `- id:` item at line index n, by the list it is in (the first line
    above indented less than its dash), or nothing when that is not a list of rules, groups or plans."""
    indent = len(lines[n]) - len(lines[n].lstrip())
    for above in reversed(lines[:n]):
        stripped = above.strip()
        if not stripped or stripped.startswith("#") or len(above) - len(above.lstrip()) >= indent:
            continue
        kind = _ID_LISTS.get(stripped.split("#", 1)[0].strip())
        item = raw_id.split("#", 1)[0].strip().strip("'\"")
        return f"{kind} {item}: " if kind and item else ""
    return ""


_SCALAR = yaml.SafeLoader(stream="")


_PLAIN_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
)


def _build(node: yaml.Node, path: Path, lines: dict[Path, int], seen: set[int]) -> Any:
    line = node.start_mark.line + 1
    # compose() resolves an alias to the node it names: seeing a node twice means an alias.
    if id(node) in seen:
        raise YamlError("YAML anchors/aliases are not allowed in rule files", line)
    seen.add(id(node))
    if len(seen) > MAX_NODES:
        raise YamlError(f"more than {MAX_NODES} YAML nodes", line)
    lines[path] = line
    if node.tag not in _PLAIN_TAGS:
        raise YamlError(
            f"YAML tag {node.tag!r} is not allowed (plain strings, numbers, lists, maps only)", line
        )
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise YamlError("mapping keys must be plain strings", knode.start_mark.line + 1)
            key = _SCALAR.construct_scalar(knode)
            if key == "<<":
                raise YamlError("YAML merge keys are not allowed in rule files", knode.start_mark.line + 1)
            if key in out:
                raise YamlError(f"duplicate key {key!r}", knode.start_mark.line + 1)
            out[key] = _build(vnode, (*path, key), lines, seen)
            lines[(*path, key)] = knode.start_mark.line + 1  # a problem with a value is at its key
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*path, i), lines, seen) for i, v in enumerate(node.value)]
    try:
        return _SCALAR.construct_object(node)
    except yaml.YAMLError as err:
        raise YamlError(f"YAML value: {err}", line) from None


def line_for(lines: dict[Path, int], loc: Path) -> int | None:
    """The line of the longest prefix of loc that has one."""
    for n in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:n]))
        if line is not None:
            return line
    return None
