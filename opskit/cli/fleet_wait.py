"""`opskit traffic wait` over several bridges: repeated --stats-file, or every bridge a run started."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from opskit import durations
from opskit.cli import output
from opskit.errors import ExitCode, UsageError


def _progress(verdicts: Any, elapsed_s: float) -> None:
    if not sys.stderr.isatty():
        return
    busy = [b.bridge for b in verdicts if not b.verdict.safe]
    click.echo(f"\r\x1b[2K{durations.format_seconds(elapsed_s)}: {len(verdicts) - len(busy)} of "
               f"{len(verdicts)} bridges safe; busy: {', '.join(busy) or 'none'}"[:200], nl=False, err=True)  # fmt: skip


def wait_fleet(stats_files: tuple[Path, ...], run_id: str | None, state_dir: Path | None, policy: Any, *,
               timeout_s: float, interval_s: float, as_json: bool) -> ExitCode:  # fmt: skip
    """Wait until every bridge is safe (those given, or every one the run started); exit 1 naming the busy."""
    from opskit.fleet.bridges import run_sources  # noqa: PLC0415 - imported on first use
    from opskit.statedir import default_state_dir  # noqa: PLC0415
    from opskit.traffic.source import FileSource  # noqa: PLC0415

    if stats_files and run_id:
        raise UsageError("give --stats-file (repeatable) or --run RUN_ID, not both")
    with contextlib.ExitStack() as stack:
        if run_id:
            sources = stack.enter_context(run_sources(state_dir or default_state_dir(), run_id))
        else:
            sources = [FileSource(f) for f in dict.fromkeys(stats_files)]
        return _wait(sources, policy, timeout_s=timeout_s, interval_s=interval_s, as_json=as_json)


def _wait(
    sources: list[Any], policy: Any, *, timeout_s: float, interval_s: float, as_json: bool
) -> ExitCode:
    from opskit.traffic.fleet import wait_all_safe  # noqa: PLC0415 - imported on first use

    result = wait_all_safe(sources, policy, timeout_s=timeout_s, interval_s=interval_s,
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
