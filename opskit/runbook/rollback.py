"""Undo a run's succeeded steps, newest first, stopping at the point of no return (`kind: irreversible`).

The journal says which steps succeeded and in which order; the runbook says how to undo each (`undo:` as a
command or an action); a `uses:` step without `undo:` is undone by its action's `undo()` with the data it
journaled. Every undo is journaled (`undo_started`, `undo_finished`), so `status` shows `undone` steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opskit import actions
from opskit.errors import ExitCode, OpskitError, TransportError
from opskit.fleet import runner as fleet_runner
from opskit.runbook.context import LOCAL, Reporter, Session, StepContext, read_secrets
from opskit.runbook.engine import Runner, RunOptions
from opskit.runbook.journal import run_dir
from opskit.runbook.lock import RunLock
from opskit.runbook.model import Kind, Step
from opskit.runbook.resume import load_for_resume
from opskit.runbook.shell import render_command
from opskit.runbook.templates import render_value


@dataclass(frozen=True)
class UndoResult:
    """One step's undo: undone | failed | nothing (no undo defined) | stopped (irreversible)."""

    step: str
    status: str
    summary: str


@dataclass(frozen=True)
class RollbackOutcome:
    """What `opskit rollback` did; `exit_code` 0 all undone, 1 an undo failed, 3 stopped at irreversible."""

    run_id: str
    exit_code: ExitCode
    message: str
    steps: list[UndoResult] = field(default_factory=list)
    stopped_at: str | None = None


def rollback(run_id: str, options: RunOptions, reporter: Reporter) -> RollbackOutcome:
    """Run the undo of every succeeded step of a run, newest first."""
    state, runbook, events = load_for_resume(
        options.state_dir, run_id, accept_changes=options.accept_changes
    )
    undo_data: dict[str, Mapping[str, Any]] = {}
    for ev in events:
        if ev.get("event") == "step_finished" and ev.get("undo") is not None:
            undo_data[str(ev["step"])] = ev["undo"]
    succeeded = [s for s in state.steps if s.status == "succeeded"]
    order = sorted(enumerate(succeeded), key=lambda p: (p[1].finished_at or "", p[0]), reverse=True)
    directory = run_dir(options.state_dir, run_id)
    lock = RunLock(directory, options.operator)
    session = Session.open(runbook, run_id, directory, options.state_dir, reporter, options.operator,
                           accept_new_host_keys=options.accept_new_host_keys, secrets=read_secrets(runbook))  # fmt: skip
    results: list[UndoResult] = []
    try:
        session.captures.update(state.captured)
        session.journal.append(
            "rollback_started", operator=options.operator, steps=[s.id for _, s in order]
        )
        reporter.started(run_id, "rollback")
        runner = Runner(session, options)
        for position, (_, st) in enumerate(order):
            step = runbook.step(st.id)
            if step is None:
                continue
            if step.kind is Kind.IRREVERSIBLE:
                results.append(
                    UndoResult(step.id, "stopped", "irreversible: the point of no return")
                )
                before = [s.id for _, s in order[position + 1 :]]
                undone = sum(1 for r in results if r.status == "undone")
                message = (
                    f"stopped at irreversible step {step.id} (the point of no return) after undoing "
                    f"{undone} step(s); still done: {', '.join([step.id, *reversed(before)])}"
                )
                return _finish(session, run_id, ExitCode.BLOCKED, message, results, step.id)
            result = _undo_step(runner, step, undo_data.get(step.id))
            results.append(result)
            if result.status == "failed":
                return _finish(
                    session,
                    run_id,
                    ExitCode.NEGATIVE,
                    f"undo of {step.id} failed: {result.summary}",
                    results,
                )
        undone = sum(1 for r in results if r.status == "undone")
        return _finish(
            session, run_id, ExitCode.OK, f"rolled back: {undone} step(s) undone", results
        )
    finally:
        session.close()
        lock.release()


def _finish(  # noqa: PLR0917 - private, one caller shape
    session: Session, run_id: str, code: ExitCode, message: str, results: list[UndoResult],
            stopped_at: str | None = None) -> RollbackOutcome:  # fmt: skip
    session.journal.append(
        "rollback_finished", exit_code=int(code), message=message, stopped_at=stopped_at
    )
    return RollbackOutcome(run_id, code, message, results, stopped_at)


def _undo_step(runner: Runner, step: Step, data: Mapping[str, Any] | None) -> UndoResult:
    if step.undo is None and not (step.uses and data is not None):
        summary = "nothing to undo (probe)" if step.kind is Kind.PROBE else "no undo: defined"
        runner.reporter.step_end(step.id, "nothing", summary, 0.0)
        return UndoResult(step.id, "nothing", summary)
    s = runner.s
    s.journal.append("undo_started", step=step.id)
    try:
        runner.reporter.step_begin(step.id, f"undo {step.title}", step.on, _describe(runner, step))
        ok, summary = _perform(runner, step, data)
    except (OpskitError, ImportError) as exc:
        ok, summary = False, str(exc)
    except Exception as exc:  # noqa: BLE001 - a faulty undo fails its step, journaled, not the process
        uses = (step.undo.uses if step.undo else None) or step.uses
        ok, summary = False, f"{uses} crashed: {type(exc).__name__}: {exc}"
    status = "succeeded" if ok else "failed"
    s.journal.append("undo_finished", step=step.id, status=status, summary=summary)
    runner.reporter.step_end(step.id, "undone" if ok else "failed", s.masker.text(summary), 0.0)
    return UndoResult(step.id, "undone" if ok else "failed", s.masker.text(summary))


def _describe(runner: Runner, step: Step) -> str | None:
    view = runner.context(step, runner.s.display_view, "*")  # "*": per-host values shown by name
    if step.undo and step.undo.run:
        return render_command(step.undo.run, view).shown
    if step.undo and step.undo.uses:
        return step.undo.uses
    return f"{step.uses} undo"


def _perform(runner: Runner, step: Step, data: Mapping[str, Any] | None) -> tuple[bool, str]:
    s = runner.s
    ctx = runner.context(step, s.secrets)
    # A fleet step is undone host by host, last batch first, only where it ran (opskit/fleet).
    hosts = (
        fleet_runner.undo_order(runner.fleet.of(step.id)) or runner.hosts_of(step, ctx) or (None,)
    )
    undo = step.undo
    if undo is not None and undo.run:
        for host in hosts:
            command = render_command(undo.run, runner.context(step, s.shell_view, host))
            env = runner.environment(step, ctx, command)
            label = host or LOCAL
            try:
                res = s.transport(host).run(
                    command.text, env=env, timeout_s=step.timeout_s,
                    on_output=s.sink(step.id, label),
                )  # fmt: skip
            except TransportError as exc:
                return False, str(exc)
            if not res.ok:
                return False, f"undo exit {res.rc} on {label}"
            if host in runner.fleet.of(step.id):
                s.journal.append("host_undone", step=step.id, host=host)
        return True, "undone"
    for host in hosts:
        actx = StepContext(s, step.id, host, dry_run=False, timeout_s=step.timeout_s)
        ctx = runner.context(step, s.secrets, host)
        record = runner.fleet.of(step.id).get(host or "")
        if record is not None:  # a fleet step: this host's own undo data
            data = record.undo
        if undo is not None and undo.uses:
            action = actions.load(undo.uses).from_params(
                actions.Params(render_value(dict(undo.with_), ctx))
            )
            result = action.run(actx)
        else:
            action = actions.load(step.uses or "").from_params(
                actions.Params(render_value(dict(step.with_), ctx))
            )
            undone = action.undo(actx, data or {})
            if undone is None:
                return False, f"{step.uses} cannot undo this step"
            result = undone
        if not result.ok:
            return False, result.summary
        if record is not None:
            s.journal.append("host_undone", step=step.id, host=host)
    return True, "undone"
