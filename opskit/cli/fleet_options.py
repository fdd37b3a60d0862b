"""`--inventory FILE` (repeatable) and `--limit PATTERN` on validate, plan, run, resume and rollback."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from opskit.cli import output

F = TypeVar("F", bound=Callable[..., Any])


def _journaled_inventories(run_id: str | None, state_dir: Path | None) -> tuple[Path, ...]:
    """The inventories a run started with: a resume or rollback without --inventory reuses them."""
    if run_id is None or state_dir is None:
        return ()
    from opskit.runbook.journal import JOURNAL, read_journal, run_dir  # noqa: PLC0415 - imported on first use

    try:
        events = read_journal(run_dir(state_dir, run_id) / JOURNAL).events
    except Exception:  # noqa: BLE001 - the command itself reports a missing run in its own words
        return ()
    start = next((e for e in events if e.get("event") == "run_started"), {})
    return tuple(Path(p) for p in start.get("inventories") or ())


def fleet_options(fn: F) -> F:
    """Sets the fleet selection (opskit.fleet.selection.SELECTION) around one command."""

    @functools.wraps(fn)
    def wrapper(
        *args: Any, inventory: tuple[Path, ...] = (), limit: str | None = None, **kwargs: Any
    ) -> Any:
        from opskit.fleet.selection import SELECTION, Selection  # noqa: PLC0415 - imported on first use

        paths = tuple(p.resolve() for p in inventory) or _journaled_inventories(
            kwargs.get("run_id"), kwargs.get("state_dir")
        )
        token = SELECTION.set(Selection(inventories=paths, limit=limit))
        try:
            return fn(*args, **kwargs)
        finally:
            SELECTION.reset(token)

    limited = click.option(
        "--limit", metavar="PATTERN",
        help="Only these hosts: names, groups, globs, !exclusions, &intersections (web:!web3, web,db).",
    )(wrapper)  # fmt: skip
    return click.option(
        "--inventory", "-i", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Hosts and groups from an inventory: opskit YAML, Ansible INI or YAML (repeatable).",
    )(limited)  # type: ignore[return-value]  # fmt: skip


def host_lines(steps: Sequence[Any]) -> None:
    """`opskit status`: one line per fleet step with each host's status."""
    for s in steps:
        if s.host_status:
            output.line(f"{s.id}: " + ", ".join(f"{h} {st}" for h, st in s.host_status.items()))
