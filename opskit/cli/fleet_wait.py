"""`opskit traffic wait` over several bridges: repeated --stats-file, or every bridge a run started."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from opskit import durations
from opskit.cli import output
from opskit.errors import ExitCode, UsageError


def bridge_files(
    stats_files: tuple[Path, ...], run_id: str | None, state_dir: Path | None
) -> list[Path]:
    """The stats files to judge: as given, or the bridge-*.json files in the run's directory."""
    if stats_files and run_id:
        raise UsageError("give --stats-file (repeatable) or --run RUN_ID, not both")
    if run_id:
        from opskit.runbook.journal import run_dir  # noqa: PLC0415 - imported on first use
        from opskit.statedir import default_state_dir  # noqa: PLC0415

        directory = run_dir(state_dir or default_state_dir(), run_id)
        found = sorted(directory.glob("bridge-*.json"))
        if not found:
            raise UsageError(
                f"run {run_id} started no bridge here (no bridge-*.json in {directory})"
            )
        return found
    if not stats_files:
        raise UsageError("give --stats-file FILE (repeatable: one per bridge) or --run RUN_ID")
    return list(dict.fromkeys(stats_files))


def _progress(verdicts: Any, elapsed_s: float) -> None:
    if not sys.stderr.isatty():
        return
    busy = [b.bridge for b in verdicts if not b.verdict.safe]
    click.echo(f"\r\x1b[2K{durations.format_seconds(elapsed_s)}: {len(verdicts) - len(busy)} of "
               f"{len(verdicts)} bridges safe; busy: {', '.join(busy) or 'none'}"[:200], nl=False, err=True)  # fmt: skip


def wait_fleet(
    files: list[Path], policy: Any, *, timeout_s: float, interval_s: float, as_json: bool
) -> ExitCode:
    """Wait until every bridge is safe; exit 0 then, 1 on timeout naming the busy ones."""
    from opskit.traffic.fleet import wait_all_safe  # noqa: PLC0415 - imported on first use
    from opskit.traffic.source import FileSource  # noqa: PLC0415

    result = wait_all_safe([FileSource(f) for f in files], policy, timeout_s=timeout_s, interval_s=interval_s,
                           on_progress=None if as_json else _progress)  # fmt: skip
    if not as_json and sys.stderr.isatty():
        click.echo("", err=True)
    if as_json:
        output.emit_json(result)
    else:
        count = len(result.bridges)
        if result.safe:
            output.line(f"SAFE to shut down the old hosts: all {count} bridges are safe")
        else:
            output.line(f"NOT SAFE: {len(result.busy)} of {count} bridges still busy: {', '.join(result.busy)} "
                        f"(timed out after {durations.format_seconds(result.waited_s)})")  # fmt: skip
        for b in result.bridges:
            state = "safe" if b.verdict.safe else f"busy, {b.verdict.active} active"
            output.line(f"  {b.bridge}: {state}")
            for reason in () if b.verdict.safe else b.verdict.reasons:
                output.line(f"    - {reason}")
    return ExitCode.OK if result.safe else ExitCode.NEGATIVE
