"""Every bridge a run started and has not undone, as stats sources: local files, or files on its hosts.

`proxy.start` journals where its bridge keeps its counters (its undo data: `host`, `stats_file`); a
fleet step does so per host (`host_finished`). A bridge on a host is read over SSH with the run's own
host definitions (its runbook and inventories), host keys verified as in the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opskit.errors import UsageError
from opskit.runbook.journal import JOURNAL, read_journal, run_dir
from opskit.traffic.source import FileSource, RemoteFileSource, StatsSource


def _bridge(undo: Any) -> tuple[str | None, str] | None:
    if isinstance(undo, Mapping) and undo.get("stats_file") and "pid" in undo:
        return (str(undo["host"]) if undo.get("host") else None, str(undo["stats_file"]))
    return None


def started_bridges(events: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    """(host or None for this machine, stats file) of each bridge still standing, in start order."""
    found: dict[tuple[str | None, str], tuple[str, str | None]] = {}  # bridge -> (step, fleet host)
    for ev in events:
        kind, step = ev.get("event"), str(ev.get("step", ""))
        if kind in ("step_finished", "host_finished") and ev.get("status") == "succeeded":
            bridge = _bridge(ev.get("undo"))
            if bridge is not None:
                found[bridge] = (step, ev.get("host"))
        elif kind == "host_undone":
            found = {b: s for b, s in found.items() if s != (step, ev.get("host"))}
        elif kind == "undo_finished" and ev.get("status") == "succeeded":
            found = {b: s for b, s in found.items() if s[0] != step}
    return list(found)


@contextmanager
def run_sources(state_dir: Path, run_id: str) -> Iterator[list[StatsSource]]:
    """The stats sources of every bridge the run started; SSH connections closed afterwards."""
    directory = run_dir(state_dir, run_id)
    bridges = started_bridges(read_journal(directory / JOURNAL).events)
    if not bridges:
        raise UsageError(
            f"run {run_id} started no bridge that is still standing (see `opskit status {run_id}`)"
        )
    sources: list[StatsSource] = [FileSource(Path(f)) for h, f in bridges if h is None]
    remote = [(h, f) for h, f in bridges if h is not None]
    if not remote:
        yield sources
        return
    from opskit.fleet.selection import SELECTION, Selection  # noqa: PLC0415
    from opskit.runbook.context import Session, SilentReporter  # noqa: PLC0415 - SSH only when needed
    from opskit.runbook.resume import load_for_resume  # noqa: PLC0415

    events = read_journal(directory / JOURNAL).events
    start = next((e for e in events if e.get("event") == "run_started"), {})
    # The run's hosts: its runbook and the inventories it was started with.
    token = SELECTION.set(
        Selection(inventories=tuple(Path(p) for p in start.get("inventories") or ()))
    )
    try:
        _, runbook, _ = load_for_resume(state_dir, run_id, accept_changes=True)
    finally:
        SELECTION.reset(token)
    session = Session.open(
        runbook, run_id, directory, state_dir, SilentReporter(), "traffic-wait", secrets={}
    )
    try:
        yield sources + [RemoteFileSource(session.transport(h), f) for h, f in remote]
    finally:
        session.close()
