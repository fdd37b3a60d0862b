"""Everything opskit prints goes through here: one-line messages, tables, JSON, live progress."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import textwrap
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click


def to_jsonable(value: Any) -> Any:  # noqa: PLR0911 - one return per JSON kind
    """Dataclasses, enums, datetimes and paths as plain JSON values (datetimes as ISO 8601)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """Print one JSON document to stdout (the `--json` face of a result object)."""
    click.echo(json.dumps(to_jsonable(value), indent=2, sort_keys=False))


def line(text: str = "", *, err: bool = False) -> None:
    """Print one line."""
    click.echo(text, err=err)


def wrapped_line(text: str, width: int, indent: str = "    ") -> None:
    """One logical line wrapped to `width`, continuation lines indented."""
    for part in textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [
        ""
    ]:
        click.echo(part)


def is_terminal() -> bool:
    """True when stdout is a terminal (live displays, colours)."""
    return sys.stdout.isatty()


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    max_width: int | None = None,
    wrap_first: str | None = None,
    notes: Sequence[str] | None = None,
) -> None:
    """A table: rich on a terminal, aligned plain text otherwise (stable for scripts and tests).

    With `max_width`, the widest columns wrap (never cut: a plan must show every command in full) so
    that no line is longer than `max_width`; the column named `wrap_first` wraps before the others.
    `notes`: one text per row, printed indented under its row (wrapped only past `max_width`).
    """
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        rich_table = Table(title=title, header_style="bold")
        for h in headers:
            rich_table.add_column(h, overflow="fold")
        for row in cells:
            rich_table.add_row(*row)
        Console(width=max_width).print(rich_table)
        return
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    if max_width is not None:
        first = list(headers).index(wrap_first) if wrap_first and wrap_first in headers else None
        widths = fit_widths(widths, max_width - 2 * (len(widths) - 1), first)
    if title:
        click.echo(title)
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip())
    for index, row in enumerate(cells):
        wrapped = [_wrap(c, w) for c, w in zip(row, widths, strict=False)]
        for i in range(max(len(w) for w in wrapped)):
            parts = [
                (w[i] if i < len(w) else "").ljust(n) for w, n in zip(wrapped, widths, strict=False)
            ]
            click.echo("  ".join(parts).rstrip())
        if notes and index < len(notes) and notes[index]:
            wrapped_line(f"    -> {notes[index]}", max_width or 10_000, indent="       ")


def fit_widths(widths: list[int], budget: int, first: int | None = None) -> list[int]:
    """Column widths within `budget`: column `first` gives up space first (down to 40 characters),
    then the widest column, none below 8 characters."""
    fitted = list(widths)
    for _ in range(sum(widths)):  # bounded: each round takes one character from one column
        if sum(fitted) <= budget:
            break
        if first is not None and fitted[first] > 40:
            fitted[first] -= 1
            continue
        widest = max(range(len(fitted)), key=lambda i: fitted[i])
        if fitted[widest] <= 8:
            break
        fitted[widest] -= 1
    return fitted


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]
