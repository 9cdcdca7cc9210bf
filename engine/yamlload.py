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
MAX_DEPTH = 100
_DEPTH_PROBLEM = f"collections nested more than {MAX_DEPTH} levels deep"
_SCALAR_ERRORS = (ValueError, KeyError, IndexError, AttributeError, OverflowError, TypeError)
_SHOWN_SCALAR_CHARS = 40

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
        node = yaml.compose(text, Loader=_Loader)
    except yaml.reader.ReaderError as e:
        line, col = _line_column(text, e.position)
        raise _fail(file, line, col, f"YAML syntax error: unacceptable character #x{e.character:04x}: {e.reason}") from None
    except RecursionError:
        raise _fail(file, 0, 0, f"YAML syntax error: {_DEPTH_PROBLEM}") from None
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


def _line_column(text: str, position: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - line_start + 1


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses collections nested deeper than MAX_DEPTH (it recurses per level)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, _DEPTH_PROBLEM, mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _fail(file: str, line: int, col: int, message: str) -> ValidationError:
    return ValidationError([ValidationIssue(Location(file, line, col), message)])


class _Builder:
    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.positions = positions
        self.count = 0
        self.constructor = yaml.SafeLoader("")
        self.open: set[int] = set()
        """Identities of the collection nodes being built (the current path), to catch recursive anchors."""

    def _fail_at(self, node: yaml.Node, message: str) -> ValidationError:
        return _fail(self.file, node.start_mark.line + 1, node.start_mark.column + 1, message)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_EXPANDED_NODES:
            raise self._fail_at(node, f"document expands to more than {MAX_EXPANDED_NODES} values (alias bomb?)")
        self.positions.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if node.tag not in _PLAIN_COLLECTION_TAGS:
            raise self._fail_at(node, f"unsupported value: tag {node.tag!r} is not allowed")
        if id(node) in self.open:
            raise self._fail_at(node, "an alias refers to the collection that contains it (recursive anchor)")
        if len(self.open) >= MAX_DEPTH:
            raise self._fail_at(node, f"{_DEPTH_PROBLEM} (through aliases)")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as e:
            raise self._fail_at(node, f"unsupported value: {e.problem}") from None
        except _SCALAR_ERRORS:
            kind = node.tag.rsplit(":", 1)[-1]
            shown = node.value if len(node.value) <= _SHOWN_SCALAR_CHARS else node.value[:_SHOWN_SCALAR_CHARS] + "..."
            raise self._fail_at(
                node, f"unsupported value: '{shown}' is not a valid {kind} (quote it to use it as a string)") from None

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
