"""A run's state, derived only from its journal events (nothing else is stored, nothing can disagree).

Public API (stable; the report generator and `opskit status` use it):

- `load_run(state_dir, run_id) -> RunState`: every step's status, attempts, duration, approvals, captures,
  the notes, the run's state and how to resume it. Raises `UsageError` for an unknown run id.
- `list_runs(state_dir) -> list[RunSummary]`: every run, newest first.
- `load_events(state_dir, run_id) -> JournalRead`: the raw events (for a timeline), plus warnings.
- `replay(events, *, live=False) -> RunState`: the pure function behind `load_run` (`live`: the run's lock is
  held right now, so a started step is running rather than in doubt).

Run states: running | succeeded | failed | aborted | interrupted. Step statuses: pending | running |
in_doubt | succeeded | failed | skipped | undoing | undone | undo_failed | undo_in_doubt, and in a dry-run the plan's statuses
(would_run | probe_ok | probe_failed | skip | gate | unknown | done).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit.runbook.journal import JOURNAL, JournalRead, read_journal, run_dir, runs_dir
from opskit.runbook.lock import is_locked

FINISHED_OK = ("succeeded", "skipped")


@dataclass(frozen=True)
class StepState:
    """One step as the journal tells it."""

    id: str
    status: str
    attempts: int = 0
    duration_s: float | None = None
    name: str | None = None
    kind: str = "mutate"
    owner: str | None = None
    hosts: list[str] = field(default_factory=list)
    command: str | None = None
    rc: int | None = None
    summary: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    approved_by: str | None = None
    captured: dict[str, Any] = field(default_factory=dict)
    has_undo_data: bool = False
    has_check: bool = False
    idempotent: bool = False
    undoable: bool = True  # it has an undo: (or an action that may undo itself)
    refused: str | None = None  # why its gate said no (the last answer)
    # A fleet step (opskit/fleet): host -> running | succeeded | failed | skipped | undone | in_doubt
    host_status: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    """A hand-over note."""

    ts: str
    operator: str
    text: str


@dataclass(frozen=True)
class RunState:
    """Everything `opskit status RUN_ID --json` prints; field names are the JSON keys."""

    run_id: str
    runbook: str
    mode: str
    state: str
    steps: list[StepState]
    notes: list[Note]
    runbook_name: str = ""
    sha256: str = ""
    operator: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    message: str = ""
    resume_hint: str | None = None
    forecast_s: float | None = None
    rolled_back: bool = False
    vars: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)  # what the operator can do now, as commands

    def step(self, step_id: str) -> StepState | None:
        return next((s for s in self.steps if s.id == step_id), None)

    @property
    def captured(self) -> dict[str, Any]:
        """Every captured value, in step order (what a resume restores)."""
        out: dict[str, Any] = {}
        for s in self.steps:
            out.update(s.captured)
        return out


@dataclass(frozen=True)
class RunSummary:
    """One line of `opskit status`."""

    run_id: str
    runbook_name: str
    runbook: str
    mode: str
    state: str
    operator: str
    started_at: str | None
    done: int
    total: int


def load_events(state_dir: Path, run_id: str) -> JournalRead:
    """The raw events of a run (UsageError when there is no such run)."""
    return read_journal(run_dir(state_dir, run_id) / JOURNAL)


def load_run(state_dir: Path, run_id: str) -> RunState:
    """The state of a run, replayed from its journal."""
    directory = run_dir(state_dir, run_id)
    read = read_journal(directory / JOURNAL)
    state = replay(read.events, live=is_locked(directory))
    if read.warnings:
        state = _with(state, warnings=[*read.warnings, *state.warnings])
    return state


def list_runs(state_dir: Path) -> list[RunSummary]:
    """Every run in the state directory, newest first."""
    root = runs_dir(state_dir)
    if not root.is_dir():
        return []
    out = []
    for directory in sorted(root.iterdir(), reverse=True):
        if not (directory / JOURNAL).is_file():
            continue
        st = replay(read_journal(directory / JOURNAL).events, live=is_locked(directory))
        done = sum(
            1 for s in st.steps if s.status in (*FINISHED_OK, "probe_ok", "would_run", "done")
        )
        out.append(
            RunSummary(st.run_id or directory.name, st.runbook_name, st.runbook, st.mode, st.state,
                       st.operator, st.started_at, done, len(st.steps))
        )  # fmt: skip
    return out


def _with(state: RunState, **changes: Any) -> RunState:
    from dataclasses import replace  # noqa: PLC0415 - imported on first use, keeps start-up fast

    return replace(state, **changes)


def replay(events: Sequence[Mapping[str, Any]], *, live: bool = False) -> RunState:  # noqa: PLR0912, PLR0915 - one branch per event
    """The pure fold of events into a RunState."""
    head: dict[str, Any] = {}
    steps: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    notes: list[Note] = []
    finished: Mapping[str, Any] | None = None
    rolled_back = False

    def slot(step_id: str) -> dict[str, Any]:
        if step_id not in steps:
            steps[step_id] = {"id": step_id, "status": "pending"}
            order.append(step_id)
        return steps[step_id]

    for ev in events:
        kind = ev.get("event")
        step_id = str(ev.get("step", ""))
        if kind == "run_started":
            head = dict(ev)
            for info in ev.get("steps", []):
                s = slot(str(info["id"]))
                s.update(
                    {
                        k: info.get(k)
                        for k in ("name", "kind", "owner", "has_check", "idempotent", "undoable")
                        if info.get(k) is not None
                    }
                )
                s["hosts"] = list(info.get("hosts", []))
        elif kind == "resumed":
            finished, rolled_back = None, False  # going forward again after a rollback
        elif kind == "rollback_started":
            rolled_back = True
        elif kind == "step_started":
            s = slot(step_id)
            s.update(
                status="running",
                attempts=int(ev.get("attempt", 1)),
                started_at=s.get("started_at") or ev["ts"],
            )
            if ev.get("command") is not None:
                s["command"] = ev["command"]
            if ev.get("hosts"):
                s["hosts"] = list(ev["hosts"])
        elif kind == "step_finished":
            s = slot(step_id)
            s.update(
                status=str(ev.get("status", "failed")),
                attempts=int(ev.get("attempts", s.get("attempts", 0)) or 0),
                duration_s=ev.get("duration_s"),
                rc=ev.get("rc"),
                summary=str(ev.get("summary", "") or ""),
                finished_at=ev["ts"],
                captured=dict(ev.get("captured") or {}),
                has_undo_data=bool(s.get("has_undo_data")) or ev.get("undo") is not None,
            )
        elif kind == "step_undo_ready":  # the action journaled its undo data before it mutated
            slot(step_id)["has_undo_data"] = True
        elif kind == "step_planned":
            s = slot(step_id)
            s.update(
                status=str(ev.get("status")),
                command=ev.get("command"),
                summary=str(ev.get("reason") or ""),
            )
            s["duration_s"] = ev.get("duration_s")
            if ev.get("hosts"):
                s["hosts"] = list(ev["hosts"])
        elif kind == "gate":
            s = slot(step_id)
            if ev.get("answer") == "approved":
                via = ev.get("via")
                s["approved_by"] = (
                    f"{ev.get('operator')} ({via})" if via else str(ev.get("operator"))
                )
                s["refused"] = None
            else:
                s["refused"] = str(ev.get("reason") or "the operator said no")
        elif kind in ("host_started", "host_finished", "host_undone"):
            status = {"host_started": "running", "host_undone": "undone"}.get(
                str(kind), str(ev.get("status"))
            )
            slot(step_id).setdefault("host_status", {})[str(ev.get("host"))] = status
        elif kind == "undo_started":
            slot(step_id)["status"] = "undoing"
        elif kind == "undo_finished":
            slot(step_id)["status"] = {"succeeded": "undone", "in_doubt": "undo_in_doubt"}.get(
                str(ev.get("status")), "undo_failed"
            )
        elif kind == "note":
            notes.append(Note(str(ev["ts"]), str(ev.get("operator", "")), str(ev.get("text", ""))))
        elif kind == "run_finished":
            finished = ev

    if finished is not None:
        state = str(finished.get("state", "failed"))
    elif live:
        state = "running"
    else:
        state = "interrupted"
    for s in steps.values():
        if s["status"] == "running" and state != "running":
            s["status"] = "in_doubt"
        for host, status in s.get("host_status", {}).items():
            if status == "running" and state != "running":
                s["host_status"][host] = "in_doubt"
        if s["status"] == "undoing" and not live:  # the rollback died mid-undo
            s["status"] = "undo_in_doubt"
    run_id = str(head.get("run_id", ""))
    resume_hint = None
    step_states = [StepState(**steps[i]) for i in order]
    advice: list[str] = []
    if head.get("mode") == "run" and rolled_back:
        advice = after_rollback(run_id, str(head.get("runbook", "")), step_states)
    elif head.get("mode") == "run" and state in ("failed", "aborted", "interrupted"):
        resume_hint = f"opskit resume {run_id}"
        advice = next_steps(run_id, step_states, rolled_back=rolled_back)
    return RunState(
        run_id=run_id,
        runbook=str(head.get("runbook", "")),
        runbook_name=str(head.get("runbook_name", "")),
        sha256=str(head.get("sha256", "")),
        mode=str(head.get("mode", "run")),
        state=state,
        steps=step_states,
        notes=notes,
        operator=str(head.get("operator", "")),
        started_at=head.get("ts"),
        finished_at=finished.get("ts") if finished else None,
        exit_code=finished.get("exit_code") if finished else None,
        message=str(finished.get("message", "")) if finished else "",
        resume_hint=resume_hint,
        forecast_s=finished.get("forecast_s") if finished else None,
        rolled_back=rolled_back,
        vars=dict(head.get("vars") or {}),
        next_steps=advice,
    )


def next_steps(run_id: str, steps: Sequence[StepState], *, rolled_back: bool = False) -> list[str]:
    """What to do after a run stopped, as lines an operator can copy (the 3 a.m. question: now what?)."""
    resume = f"opskit resume {run_id}"
    if rolled_back:
        again = [s.id for s in steps if s.status not in FINISHED_OK]
        return [f"{resume}    (after the rollback it runs {', '.join(again) or 'nothing'} again)"]
    lines: list[str] = []
    for s in steps:
        if s.status == "in_doubt" and s.kind == "probe":
            lines.append(
                f"{resume}    (step {s.id} was cut off; it changes nothing, so it runs again)"
            )
        elif s.status == "in_doubt" and s.has_check:
            lines.append(
                f"{resume}    (step {s.id} was cut off; its check: decides whether it runs again)"
            )
        elif s.status == "in_doubt" and s.idempotent:
            lines.append(
                f"{resume}    (step {s.id} was cut off; it is idempotent, so it runs again)"
            )
        elif s.status == "in_doubt":
            lines += [
                f"step {s.id} was cut off and has no check:; see on its host whether it took effect, then:",
                f"  {resume} --skip-in-doubt     (it took effect: count it as done)",
                f"  {resume} --rerun-in-doubt    (it did not: run it again)",
            ]  # fmt: skip
        elif s.refused and s.status == "pending" and "--approve" in s.refused:
            lines.append(
                f"{resume} --approve {s.id}    (or resume at a terminal to answer the gate)"
            )
        elif s.refused and s.status == "pending":
            lines.append(f"{resume}    (asks the gate of {s.id} again)")
        elif s.status == "failed" and s is _last_failed(steps):
            lines.append(f"fix what made {s.id} fail, then: {resume}    (runs {s.id} again)")
    if not lines:
        lines.append(resume)
    if any(
        (s.status == "succeeded" and s.undoable)
        or (s.status in ("failed", "in_doubt") and s.has_undo_data)  # its undo data came first
        for s in steps
    ):
        lines.append(f"or undo what was done: opskit rollback {run_id}")
    return lines


UNDO_TOUCHED = ("undone", "undo_failed", "undo_in_doubt", "undoing")


def after_rollback(run_id: str, runbook: str, steps: Sequence[StepState]) -> list[str]:
    """After a rollback the run does not go forward again (a resume would redo undone steps): finish
    the rollback, or start a new run."""
    failed = [s.id for s in steps if s.status == "undo_failed"]
    cut_off = [s for s in steps if s.status == "undo_in_doubt"]
    lines = []
    if failed:
        lines.append(f"opskit rollback {run_id}    (tries the undo of {', '.join(failed)} again)")
    for s in cut_off:
        if s.has_check:
            lines.append(
                f"opskit rollback {run_id}    (the undo of {s.id} was cut off; its check: decides)"
            )
        else:
            lines += [
                f"the undo of {s.id} was cut off and it has no check:; see on its host whether it took effect, then:",
                f"  opskit rollback {run_id} --skip-in-doubt     (it did)",
                f"  opskit rollback {run_id} --rerun-in-doubt    (it did not)",
            ]  # fmt: skip
    lines.append(f"opskit run {runbook}    (a new run; this one was rolled back)")
    return lines


def _last_failed(steps: Sequence[StepState]) -> StepState | None:
    """The failure that ended the run: a failed step with nothing started after it."""
    started = [s for s in steps if s.status != "pending"]
    return started[-1] if started and started[-1].status == "failed" else None


def past_durations(state_dir: Path, runbook: str, *, newest: int = 20) -> dict[str, float]:
    """step id -> seconds it took when it last succeeded in a real run of `runbook` (newest runs only).

    A real night's `sync data` may take an hour; a forecast that counts only waits would call it a fit.
    """
    root = runs_dir(state_dir)
    if not root.is_dir():
        return {}
    found: dict[str, float] = {}
    for directory in sorted(root.iterdir(), reverse=True)[:newest]:
        events = read_journal(directory / JOURNAL).events
        head = events[0] if events else {}
        if head.get("event") != "run_started" or head.get("mode") != "run":
            continue
        if head.get("runbook") != runbook:
            continue
        for ev in events:
            if ev.get("event") == "step_finished" and ev.get("status") == "succeeded":
                duration = ev.get("duration_s")
                if isinstance(duration, int | float) and duration > 0:
                    found.setdefault(str(ev.get("step")), float(duration))
    return found
