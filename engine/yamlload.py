"""Safe YAML loading that remembers where every value came from.

Only plain scalars, mappings and sequences are accepted (no Python objects). Aliases are allowed but
the expanded document is bounded, which defeats "billion laughs" alias bombs. Every mapping and
sequence node's position is kept in :class:`Positions` so errors can name file, line and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.errors import Location, ValidationError, ValidationIssue

MAX_DOCUMENT_BYTES = 1_000_000
MAX_EXPANDED_NODES = 200_000

Path = tuple[str | int, ...]
_PLAIN_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


@dataclass
class Positions:
    """Source positions of a loaded document, keyed by the path of keys/indexes to each value."""

    file: str
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: Path) -> Location:
        """The location of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p and p not in self.marks:
            p = p[:-1]
        line, col = self.marks.get(p, (0, 0))
        return Location(self.file, line, col)


def load_yaml(text: str | bytes, file: str) -> tuple[Any, Positions]:
    """Parse one YAML document; raise :class:`ValidationError` with a location on any problem."""
    if isinstance(text, bytes):
        if len(text) > MAX_DOCUMENT_BYTES:
            raise _fail(file, 0, 0, f"document is {len(text)} bytes; the limit is {MAX_DOCUMENT_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _fail(file, 0, 0, f"not UTF-8 (byte {e.start}): save the file as UTF-8") from None
    if len(text) > MAX_DOCUMENT_BYTES:
        raise _fail(file, 0, 0, f"document is {len(text)} characters; the limit is {MAX_DOCUMENT_BYTES}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise _fail(file, line, col, f"YAML syntax error: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise _fail(file, 0, 0, f"YAML error: {e}") from None
    positions = Positions(file)
    if node is None:
        return None, positions
    builder = _Builder(file, positions)
    return builder.build(node, ()), positions


def _fail(file: str, line: int, col: int, message: str) -> ValidationError:
    return ValidationError([ValidationIssue(Location(file, line, col), message)])


class _Builder:
    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.positions = positions
        self.count = 0
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_EXPANDED_NODES:
            raise _fail(
                self.file, node.start_mark.line + 1, node.start_mark.column + 1,
                f"document expands to more than {MAX_EXPANDED_NODES} values (alias bomb?)",
            )
        self.positions.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_COLLECTION_TAGS:
            raise _fail(self.file, node.start_mark.line + 1, node.start_mark.column + 1,
                        f"unsupported value: tag {node.tag!r} is not allowed")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as e:
            raise _fail(
                self.file, node.start_mark.line + 1, node.start_mark.column + 1,
                f"unsupported value: {e.problem}",
            ) from None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = self.build(value_node, path)
                for item in merged if isinstance(merged, list) else [merged]:
                    if isinstance(item, dict):
                        for k, v in item.items():
                            out.setdefault(k, v)
                continue
            key = self.build(key_node, path)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if not isinstance(key, str | int | float | bool):
                raise _fail(self.file, line, col, "mapping keys must be plain scalars")
            key = str(key)
            if key in out:
                raise _fail(self.file, line, col, f"duplicate key '{key}'")
            self.positions.marks[(*path, key)] = (line, col)
            out[key] = self.build(value_node, (*path, key))
        return out
