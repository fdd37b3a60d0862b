"""YAML read through PyYAML's safe composer, so every value keeps its FILE:LINE:COL.

`yaml.load` would hand back bare dicts with no positions (and is banned in this repository); here each
value is a `Y` carrying its location, and duplicate keys are reported instead of silently overwritten.
A hostile file is refused in one located line before it is composed (issue #10): alias bombs (billion
laughs), an alias inside its own anchor, nesting deeper than any runbook needs, NUL bytes and lone
surrogates, files that are not regular or are too large to be a runbook.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opskit.errors import RunbookInvalid, SourceLocation

MAX_BYTES = 1024 * 1024  # the shipped night is 12 KiB
MAX_DEPTH = 64  # the shipped runbooks nest 5 deep; the composer recurses once per level
MAX_VALUES = 100_000  # values once every alias is expanded


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
        value = self._scalar(node)
        if isinstance(value, str) and (why := unprintable(value)):
            self.problems.append(RunbookInvalid(loc, why))
            value = None
        return Y(value, loc, key_loc, quoted)

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append(
                RunbookInvalid(_loc(self.display, node.start_mark), "expected a plain value here")
            )
            return None
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            problem = f"YAML: {exc.problem or exc.context}"
            self.problems.append(RunbookInvalid(_loc(self.display, node.start_mark), problem))
            return None
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            problem = f"YAML: {one_line(str(exc))}"
            self.problems.append(RunbookInvalid(_loc(self.display, node.start_mark), problem))
            return None


def one_line(text: str) -> str:
    """The first line of a message: every problem is reported as one line."""
    return (text.strip().splitlines() or [""])[0]


def unprintable(text: str) -> str | None:
    """Why a text cannot be used (a NUL byte, a lone surrogate), or None when it can."""
    if "\0" in text:
        return "text holds a NUL byte, which no command, file name or variable can carry"
    for ch in text:
        if "\ue000" <= ch <= "\ue003":  # opskit/runbook/shell.py marks values with these
            return f"text holds U+{ord(ch):04X}, a private-use character opskit reserves"
        if "\ud800" <= ch <= "\udfff":
            return (
                f"text holds a lone surrogate (U+{ord(ch):04X}), which is not valid Unicode "
                "(bytes that were not UTF-8?)"
            )
    return None


def _where(display: str, text: str, offset: int) -> SourceLocation:
    before = text[:offset]
    return SourceLocation(display, before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


def _screen(text: str, display: str, problems: list[RunbookInvalid]) -> bool:
    """Walk the YAML events once (no recursion, no expansion): refuse bombs and deep nesting."""
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (values, depth) once expanded
    open_: list[list[Any]] = []  # [anchor, values, depth] of each collection being read
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        where = _loc(display, event.start_mark)
        added, depth = 0, 0
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_) >= MAX_DEPTH:
                problems.append(RunbookInvalid(where, f"nested more than {MAX_DEPTH} levels deep"))
                return False
            open_.append([event.anchor, 1, 1])
            total += 1
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, added, depth = open_.pop()
            if anchor:
                sizes[anchor] = (added, depth)
        elif isinstance(event, yaml.ScalarEvent):
            added, total = 1, total + 1
            if event.anchor:
                sizes[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            if any(frame[0] == event.anchor for frame in open_):
                problems.append(RunbookInvalid(where, f"alias *{event.anchor} refers to itself"))
                return False
            added, depth = sizes.get(str(event.anchor), (1, 0))
            total += added
            if len(open_) + depth > MAX_DEPTH:
                problems.append(RunbookInvalid(where, f"nested more than {MAX_DEPTH} levels deep"))
                return False
        if total > MAX_VALUES:
            problems.append(
                RunbookInvalid(where, f"more than {MAX_VALUES} values once aliases are expanded "
                               "(an alias bomb?)")
            )  # fmt: skip
            return False
        if open_:
            open_[-1][1] += added
            open_[-1][2] = max(open_[-1][2], depth + 1)
    return True


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; a device, a FIFO or a file too large to be a runbook is refused unread."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_size > MAX_BYTES:
        raise ValueError(
            f"{info.st_size} bytes: larger than {MAX_BYTES // 1024} KiB, not a runbook"
        )
    with path.open("rb") as fh:
        return fh.read(MAX_BYTES + 1)


def read(path: Path, display: str, problems: list[RunbookInvalid]) -> tuple[Y | None, bytes]:
    """The document at `path` as a located tree (None, with a problem, when it cannot be read)."""
    start = SourceLocation(display, 1, 1)
    try:
        raw = _read_bytes(path)
    except OSError as exc:
        problems.append(RunbookInvalid(start, f"cannot read: {exc.strerror or exc}"))
        return None, b""
    except ValueError as exc:
        problems.append(RunbookInvalid(start, str(exc)))
        return None, b""
    return _parse(raw, display, problems), raw


def _parse(raw: bytes, display: str, problems: list[RunbookInvalid]) -> Y | None:  # noqa: PLR0911 - one per kind of bad file
    start = SourceLocation(display, 1, 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = _where(display, raw[: exc.start].decode("utf-8", "replace"), exc.start)
        problems.append(RunbookInvalid(where, "not UTF-8 text (a binary file?)"))
        return None
    try:
        if not _screen(text, display, problems):
            return None
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _loc(display, mark) if mark else start
        problems.append(RunbookInvalid(where, f"YAML: {one_line(str(exc.problem or exc.context))}"))
        return None
    except yaml.reader.ReaderError as exc:
        where = _where(display, text, exc.position)
        problems.append(RunbookInvalid(where, f"a control character (#x{exc.character:04x}) "
                                       "is not allowed in YAML: is this a binary file?"))  # fmt: skip
        return None
    except yaml.YAMLError as exc:
        problems.append(RunbookInvalid(start, f"YAML: {one_line(str(exc))}"))
        return None
    except RecursionError:  # a last line of defence: _screen bounds the depth the composer sees
        problems.append(RunbookInvalid(start, f"nested more than {MAX_DEPTH} levels deep"))
        return None
    if node is None:
        problems.append(RunbookInvalid(start, "the file is empty"))
        return None
    return _Converter(display, problems).convert(node)
