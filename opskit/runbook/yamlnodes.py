"""YAML read through PyYAML's safe composer, so every value keeps its FILE:LINE:COL.

`yaml.load` would hand back bare dicts with no positions (and is banned in this repository); here each
value is a `Y` carrying its location, and duplicate keys are reported instead of silently overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opskit.errors import RunbookInvalid, SourceLocation


@dataclass(frozen=True)
class Y:
    """A YAML value with its location; mappings hold `dict[str, Y]`, sequences `list[Y]`."""

    value: Any
    loc: SourceLocation
    key_loc: SourceLocation | None = None
    quoted: bool = False

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> Any:
        """The value without locations (plain dicts, lists and scalars)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def _loc(display: str, mark: Any) -> SourceLocation:
    return SourceLocation(display, int(mark.line) + 1, int(mark.column) + 1)


class _Converter:
    def __init__(self, display: str, problems: list[RunbookInvalid]) -> None:
        self.display = display
        self.problems = problems
        self.constructor = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, key_loc: SourceLocation | None = None) -> Y:
        loc = _loc(self.display, node.start_mark)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Y] = {}
            for key_node, value_node in node.value:
                kloc = _loc(self.display, key_node.start_mark)
                # Keys stay text: YAML 1.1 would turn `on:` (a step field) into True.
                if isinstance(key_node, yaml.ScalarNode):
                    name = str(key_node.value)
                else:
                    name = str(self._scalar(key_node))
                if name in out:
                    self.problems.append(RunbookInvalid(kloc, f"duplicate key '{name}'"))
                    continue
                out[name] = self.convert(value_node, kloc)
            return Y(out, loc, key_loc)
        if isinstance(node, yaml.SequenceNode):
            return Y([self.convert(item) for item in node.value], loc, key_loc)
        quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
        return Y(self._scalar(node), loc, key_loc, quoted)

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append(
                RunbookInvalid(_loc(self.display, node.start_mark), "expected a plain value here")
            )
            return None
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problems.append(RunbookInvalid(_loc(self.display, node.start_mark), str(exc)))
            return None


def read(path: Path, display: str, problems: list[RunbookInvalid]) -> tuple[Y | None, bytes]:
    """The document at `path` as a located tree (None, with a problem, when it cannot be read)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(
            RunbookInvalid(SourceLocation(display, 1, 1), f"cannot read: {exc.strerror}")
        )
        return None, b""
    try:
        node = yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        problems.append(RunbookInvalid(SourceLocation(display, 1, 1), "not UTF-8 text"))
        return None, raw
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _loc(display, mark) if mark else SourceLocation(display, 1, 1)
        problems.append(RunbookInvalid(where, f"YAML: {exc.problem or exc.context}"))
        return None, raw
    except yaml.YAMLError as exc:
        problems.append(RunbookInvalid(SourceLocation(display, 1, 1), f"YAML: {exc}"))
        return None, raw
    if node is None:
        problems.append(RunbookInvalid(SourceLocation(display, 1, 1), "the file is empty"))
        return None, raw
    return _Converter(display, problems).convert(node), raw
