"""Build the report model from a run's journal: pure functions over the list of events."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from opskit.actions import REGISTRY
from opskit.redaction import Masker
from opskit.report import source
from opskit.report.model import Approval, Note, Report, StepRecord, TimelineEntry
from opskit.report.traffic import parse_ts, traffic_series
from opskit.runbook.journal import run_dir as journal_run_dir
from opskit.runbook.replay import RunState, replay
from opskit.statedir import default_state_dir

_DONE = {"succeeded", "ok", "done", "skipped", "skip", "probe_ok"}
_OUTPUT_TAIL = 5
_SEGMENT_STARTS = {"run_started", "resumed", "rollback_started"}


def find_run_dir(run_id: str, state_dir: Path | None = None) -> Path:
    """runs/<RUN_ID>/ under the state dir (--state-dir, $OPSKIT_STATE_DIR, ~/.local/state/opskit).

    An unknown run id is bad input (exit 2), as for `opskit status` and `opskit resume`.
    """
    base = state_dir or default_state_dir()
    return journal_run_dir(base, run_id)


def build_report(run_dir: Path, *, secrets: Iterable[str] = ()) -> Report:
    """The report of the run in `run_dir`; every string masked again with `secrets` and the run's own."""
    read = source.read_run(run_dir)
    started = _first(read.events, "run_started")
    masker = Masker([*secrets, *source.runbook_secrets(_text(started, "runbook"))])
    events = [masker.value(e) for e in read.events] if masker else read.events
    report = from_events(run_dir.name, events, warnings=read.warnings, replayed=read.state)
    traffic = traffic_series(run_dir, report.steps)
    return Report(**{**report.__dict__, "traffic": traffic})


def from_events(
    run_id: str,
    events: list[dict[str, Any]],
    *,
    warnings: list[str],
    replayed: RunState | None = None,
) -> Report:
    """The report model from journal events (oldest first); `replayed`: the engine's replay of them
    (which knows whether the run is live), replayed here when not given."""
    started = _first(events, "run_started")
    finished = _last(events, "run_finished")
    if replayed is None:
        replayed = replay(list[Mapping[str, Any]](events))
    steps = _steps(events, started, {s.id: s.status for s in replayed.steps})
    state = replayed.state
    resume_command, next_steps = _next_steps(run_id, state, list(replayed.next_steps))
    done = [s.id for s in steps if s.status in _DONE]
    # A failed step the run went past (continue_on_error) is history, not work left.
    remains = [
        s.id
        for s in steps
        if s.status not in _DONE and not (state == "succeeded" and s.status == "failed")
    ]
    started_at = _text(started, "ts")
    finished_at = _text(finished, "ts")
    return Report(
        run_id=run_id,
        runbook=_text(started, "runbook", "runbook_path", "path"),
        mode=_text(started, "mode"),
        state=state,
        operator=_text(started, "operator"),
        started_at=started_at,
        finished_at=finished_at,
        duration_s=_between(started_at, finished_at),
        steps=steps,
        notes=[
            Note(
                at=_text(e, "ts"),
                author=_text(e, "operator", "author"),
                text=_text(e, "text", "note") or "",
            )
            for e in events
            if e.get("event") == "note"
        ],
        timeline=_timeline(events, live=state == "running"),
        done=done,
        remains=remains,
        resume_command=resume_command,
        next_steps=next_steps,
        traffic=None,
        warnings=warnings,
    )


def _steps(  # noqa: PLR0912 - one branch per event kind
    events: list[dict[str, Any]], started: dict[str, Any] | None, statuses: dict[str, str]
) -> list[StepRecord]:
    order: list[str] = []
    info: dict[str, dict[str, Any]] = {}

    def entry(step_id: str) -> dict[str, Any]:
        if step_id not in info:
            order.append(step_id)
            info[step_id] = {"status": "pending", "attempts": 0, "approvals": [], "output": []}
        return info[step_id]

    for planned in (started or {}).get("steps") or []:
        meta = planned if isinstance(planned, dict) else {"id": str(planned)}
        if meta.get("id"):
            entry(str(meta["id"])).update(meta=meta)
    # Attempts are counted per process (the run, then each resume): a step cut off by a kill and run
    # again on resume was attempted twice, and a step settled by its check: was not attempted again.
    segment = 0
    for event in events:
        if event.get("event") in _SEGMENT_STARTS:
            segment += 1
        step_id = _text(event, "step", "step_id")
        if step_id is None:
            continue
        rec = entry(step_id)
        kind = event.get("event")
        tries: dict[int, int] = rec.setdefault("tries", {})
        if kind == "step_started":
            rec.setdefault("started_at", _text(event, "ts"))
            tries[segment] = max(tries.get(segment, 0), int(event.get("attempt") or 1))
            meta = rec.setdefault("meta", {})
            meta.update({k: v for k, v in event.items() if v is not None})
            meta.setdefault("uses", _uses_of(_text(event, "command")))
        elif kind == "step_finished":
            rec.update(finished=event, finished_at=_text(event, "ts"))
            if segment in tries and isinstance(event.get("attempts"), int):
                tries[segment] = max(tries[segment], int(event["attempts"]))
        elif kind == "gate":
            rec["approvals"].append(_approval(step_id, event))
        elif kind == "output":
            text = _text(event, "line", "text", "data")
            for out_line in (text or "").splitlines():
                if not rec["output"] or rec["output"][-1] != out_line:  # retries repeat themselves
                    rec["output"].append(out_line)
        rec["attempts"] = sum(tries.values())
    for step_id, status in statuses.items():
        entry(step_id)["status"] = status
    variables = dict((started or {}).get("vars") or {})
    return [_step_record(step_id, info[step_id], variables) for step_id in order]


def _title(meta: dict[str, Any], step_id: str, variables: dict[str, Any]) -> str:
    """The step's name with the run's vars filled in; the id when a name needs an include's scope."""
    title = _text(meta, "title", "name") or step_id
    for key, value in variables.items():
        if isinstance(value, str | int | float):
            title = re.sub(r"\{\{\s*" + re.escape(key) + r"\s*\}\}", str(value), title)
    return step_id if "{{" in title else title


def _step_record(step_id: str, rec: dict[str, Any], variables: dict[str, Any]) -> StepRecord:
    meta: dict[str, Any] = rec.get("meta") or {}
    fin: dict[str, Any] = rec.get("finished") or {}
    status = rec["status"]
    values = {**(fin.get("captured") or {}), **(fin.get("values") or {})}
    duration = fin.get("duration_s")
    return StepRecord(
        id=step_id,
        title=_title(meta, step_id, variables),
        owner=_text(meta, "owner"),
        kind=_text(meta, "kind"),
        uses=_text(meta, "uses"),
        status=status,
        attempts=int(rec["attempts"]),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        started_at=rec.get("started_at"),
        finished_at=rec.get("finished_at"),
        approvals=rec["approvals"],
        values=values,
        summary=_text(fin, "summary", "message", "error") or "",
        rc=fin.get("rc") if isinstance(fin.get("rc"), int) else None,
        output_tail=rec["output"][-_OUTPUT_TAIL:],
    )


def _approval(step_id: str, event: dict[str, Any]) -> Approval:
    answer = event.get("answer", event.get("approved"))
    approved = answer is True or str(answer).lower() in {"yes", "y", "approved", "true", "ok"}
    level = _text(event, "level") or "confirm"
    via = _text(event, "via")
    return Approval(
        step=step_id,
        operator=_text(event, "operator", "by") or "unknown",
        level=f"{level}, {via}" if via else level,
        approved=approved,
        at=_text(event, "ts"),
    )


def _next_steps(run_id: str, state: str, advice: list[str]) -> tuple[str | None, list[str]]:
    """The exact resume command and the engine's advice (`replay().next_steps`) for a stopped run."""
    if state not in {"failed", "aborted", "interrupted"}:
        return None, []
    state_dir = os.environ.get("OPSKIT_STATE_DIR")
    prefix = f"OPSKIT_STATE_DIR={state_dir} " if state_dir else ""
    lines = [line.replace("opskit ", prefix + "opskit ", 1) for line in advice]
    command = f"{prefix}opskit resume {run_id}"
    for line in lines:
        if "opskit resume" in line:
            start = line.index(prefix + "opskit resume") if prefix else line.index("opskit resume")
            command = line[start:].split("    (", 1)[0].strip()
            break
    return command, lines or [command]


def _timeline(events: list[dict[str, Any]], *, live: bool = False) -> list[TimelineEntry]:  # noqa: PLR0912 - one line per event kind
    out = []
    operator: str | None = None
    open_since: str | None = None  # a process that started and has not said how it ended
    for e in events:
        at, kind = _text(e, "ts"), e.get("event")
        step = _text(e, "step", "step_id") or ""
        what = None
        if kind in _SEGMENT_STARTS and open_since and at:
            out.append(_stopped(events, open_since, at))
        if kind in _SEGMENT_STARTS:
            open_since = at
            who = _text(e, "operator") or "unknown"
            if operator is not None and who != operator:
                out.append(
                    TimelineEntry(at=at or "", what=f"operator changed: {operator} -> {who}")
                )
            operator = who
        if kind == "run_started":
            what = f"run started by {operator} ({_text(e, 'mode') or 'run'})"
        elif kind == "resumed":
            what = f"resumed by {operator}" + (
                " with --accept-changes (the runbook changed since the run started)"
                if e.get("accepted_changes")
                else ""
            )
        elif kind == "in_doubt":
            what = (
                f"{step} was in doubt: {_text(e, 'decision') or '?'} ({_text(e, 'reason') or ''})"
            )
        elif kind == "rollback_started":
            what = f"rollback started by {operator}"
        elif kind == "undo_finished":
            what = f"{step} undo {_text(e, 'status') or 'finished'}: {_text(e, 'summary') or ''}"
        elif kind == "rollback_finished":
            open_since = None
            what = f"rollback finished: {_text(e, 'message') or ''}"
        elif kind == "step_started":
            what = f"{step} started"
        elif kind == "step_finished":
            summary = _text(e, "summary") or ""
            what = f"{step} {_text(e, 'status') or 'finished'}" + (
                f": {summary}" if summary else ""
            )
        elif kind == "gate":
            ap = _approval(step, e)
            what = f"{step} gate {'approved' if ap.approved else 'refused'} by {ap.operator} ({ap.level})"
        elif kind == "note":
            what = f"note: {_text(e, 'text', 'note') or ''}"
        elif kind == "run_finished":
            open_since = None
            what = f"run {_text(e, 'state', 'status') or 'finished'}"
        if what and at:
            out.append(TimelineEntry(at=at, what=what))
    if open_since and not live:  # killed, and nobody has resumed it yet
        out.append(_stopped(events, open_since, None))
    return out


def _stopped(events: list[dict[str, Any]], since: str, until: str | None) -> TimelineEntry:
    """A process that journaled no end before the next one began was killed (or its host went down)."""
    last = max(
        (
            t
            for e in events
            if (t := _text(e, "ts")) and since <= t and (until is None or t < until)
        ),
        default=since,
    )
    return TimelineEntry(
        at=last, what="the run stopped here without finishing (killed, or its host went down)"
    )


def _uses_of(command: str | None) -> str | None:
    """The action a step used, from the command the engine journals ("dns.update {...}")."""
    word = (command or "").split(" ", 1)[0]
    return word if word in REGISTRY else None


def _first(events: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((e for e in events if e.get("event") == kind), None)


def _last(events: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((e for e in reversed(events) if e.get("event") == kind), None)


def _text(event: dict[str, Any] | None, *keys: str) -> str | None:
    """The first of `keys` present in the event, as text (journals of other versions name fields alike)."""
    if not event:
        return None
    for key in keys:
        value = event.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def _between(start: str | None, end: str | None) -> float | None:
    a, b = parse_ts(start), parse_ts(end)
    return (b - a).total_seconds() if a and b else None
