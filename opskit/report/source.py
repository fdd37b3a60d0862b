"""Where the report reads a run from: the engine's journal reader and replay (the one place that knows).

`opskit.runbook.replay.replay` is the single truth for statuses; the raw events add what a report shows
beyond `opskit status`: output tails, action values, gate levels, the timeline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit.actions.samples import SAMPLES_FILE
from opskit.errors import Blocked, OpskitError
from opskit.runbook.context import readable_secrets
from opskit.runbook.journal import JOURNAL, read_journal
from opskit.runbook.loader import load
from opskit.runbook.lock import is_locked
from opskit.runbook.replay import RunState, replay

SAMPLES = SAMPLES_FILE  # the bridge's connection counts over time (see opskit.actions.samples)


@dataclass(frozen=True)
class RunEvents:
    """A run's events (masked already by the engine), its replayed state, and what could not be read."""

    run_dir: Path
    events: list[dict[str, Any]]
    state: RunState
    warnings: list[str] = field(default_factory=list)


def read_run(run_dir: Path) -> RunEvents:
    """Every event of the run's journal and its replayed state; Blocked (exit 3) without a journal."""
    path = run_dir / JOURNAL
    if not path.is_file():
        raise Blocked(f"{path}: no journal (is the run id right? `opskit status` lists runs)")
    read = read_journal(path)
    events = [dict(e) for e in read.events]
    return RunEvents(
        run_dir,
        events,
        replay(list[Mapping[str, Any]](events), live=is_locked(run_dir)),
        list(read.warnings),
    )


def runbook_secrets(runbook_path: str | None) -> list[str]:
    """The run's secret values when they can still be read here (to mask the report once more)."""
    if not runbook_path:
        return []
    try:
        runbook, problems = load(Path(runbook_path))
        if runbook is None or problems:
            return []
        return readable_secrets(runbook)  # a report never runs a secret's `command:`
    except (OpskitError, OSError):
        return []


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file ([] when it does not exist; torn lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
