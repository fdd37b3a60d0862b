"""Undo a run's succeeded steps, newest first, stopping at the point of no return (`kind: irreversible`).

The journal says which steps succeeded and in which order; the runbook says how to undo each (`undo:` as a
command or an action); a `uses:` step without `undo:` is undone by its action's `undo()` with the data it
journaled. Every undo is journaled (`undo_started`, `undo_finished`), so `status` shows `undone` steps.

Rollback is as crash-safe as the forward run (issue #10): a failed undo is tried again by the next rollback;
an undo cut off (kill -9, SIGTERM, Ctrl-C) is "undo in doubt" and the next rollback asks the step's
`check:` (the forward change still in place means the undo did not take) or needs --rerun-in-doubt /
--skip-in-doubt. A changing step that has no undo keeps the rollback from saying "done". An action may
journal its undo data before it mutates (`step_undo_ready`): a step cut off after that point is rolled
back with it, and a step's earliest undo data wins (a re-run reads its own change as "before").
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opskit import actions
from opskit.errors import Blocked, ExitCode, OpskitError, TransportError
from opskit.fleet import runner as fleet_runner
from opskit.runbook.context import LOCAL, Reporter, Session, StepContext, read_secrets
from opskit.runbook.engine import Runner, RunOptions, check_approvals
from opskit.runbook.journal import run_dir
from opskit.runbook.lock import RunLock
from opskit.runbook.model import GateLevel, Kind, Runbook, Step
from opskit.runbook.replay import RunState, StepState
from opskit.runbook.resume import changes_nothing, load_for_resume, running_what, still_running
from opskit.runbook.scope import render_with
from opskit.runbook.shell import render_command

GATE_ID = "rollback"  # what --approve names to pass the rollback's own gate
UNDO_AGAIN = ("succeeded", "undo_failed", "undo_in_doubt")
# `step_undo_ready` is journaled by the action before it mutates, `step_finished` with its result.
UNDO_DATA_EVENTS = ("step_undo_ready", "step_finished")


@dataclass(frozen=True)
class UndoResult:
    """One step's undo: undone | failed | nothing | in_effect (no undo) | stopped (irreversible) |
    in_doubt (cut off) | would_undo (dry-run)."""

    step: str
    status: str
    summary: str


@dataclass(frozen=True)
class RollbackOutcome:
    """What `opskit rollback` did; exit 0 all undone, 1 an undo failed, 3 stopped or something stays in
    effect, 130 interrupted."""

    run_id: str
    exit_code: ExitCode
    message: str
    steps: list[UndoResult] = field(default_factory=list)
    stopped_at: str | None = None
    in_effect: list[str] = field(default_factory=list)  # changing steps without undo: still done


@dataclass(frozen=True)
class _Candidate:
    step: Step
    state: StepState
    data: Mapping[str, Any] | None


def _candidates(
    state: RunState, runbook: Runbook, events: Sequence[Mapping[str, Any]]
) -> list[_Candidate]:
    """The steps to undo, newest first: succeeded ones, failed ones whose action left undo data, and
    undos that failed or were cut off before."""
    undo_data: dict[str, Mapping[str, Any]] = {}
    for ev in events:
        if ev.get("event") in UNDO_DATA_EVENTS and ev.get("undo") is not None:
            # The earliest: it was read before the step ever changed anything (a resumed dns.update
            # finds its own half-done change and would "restore" that).
            undo_data.setdefault(str(ev["step"]), ev["undo"])
    # A failed or cut-off action step that journaled undo data may have changed something (dns.update:
    # the primary serves the switch, a secondary never did): leaving it in effect would be a half rollback.
    found = [
        s
        for s in state.steps
        if s.status in UNDO_AGAIN or (s.status in ("failed", "in_doubt") and s.id in undo_data)
    ]
    order = sorted(
        enumerate(found),
        key=lambda p: (p[1].finished_at or p[1].started_at or "", p[0]),
        reverse=True,
    )
    out = []
    for _, st in order:
        step = runbook.step(st.id)
        if step is not None:
            out.append(_Candidate(step, st, undo_data.get(st.id)))
    return out


def _has_undo(c: _Candidate) -> bool:
    return c.step.undo is not None or bool(c.step.uses and c.data is not None)


def rollback(
    run_id: str, options: RunOptions, reporter: Reporter, *, dry_run: bool = False
) -> RollbackOutcome:
    """Run the undo of every succeeded step of a run, newest first (dry_run: only say what it would do)."""
    directory = run_dir(options.state_dir, run_id)
    if dry_run:
        state, runbook, events = load_for_resume(
            options.state_dir, run_id, accept_changes=options.accept_changes
        )
        return _preview(run_id, state, runbook, events, options, reporter)
    lock = RunLock(directory, options.operator)
    try:
        state, runbook, events = load_for_resume(
            options.state_dir, run_id, accept_changes=options.accept_changes, lock_held=True
        )
        check_approvals_or_rollback(runbook, options.approve)
        return _rollback_locked(run_id, directory, state, runbook, events, options, reporter)
    finally:
        lock.release()


def check_approvals_or_rollback(runbook: Runbook, approve: frozenset[str]) -> None:
    """--approve names a step, or `rollback` (this command's own gate)."""
    check_approvals(runbook, approve - {GATE_ID})


def _rollback_locked(  # noqa: PLR0917 - private: the state loaded under the lock
    run_id: str, directory: Any, state: RunState, runbook: Runbook,
    events: Sequence[Mapping[str, Any]], options: RunOptions, reporter: Reporter,
) -> RollbackOutcome:  # fmt: skip
    todo = _candidates(state, runbook, events)
    session = Session.open(runbook, run_id, directory, options.state_dir, reporter, options.operator,
                           accept_new_host_keys=options.accept_new_host_keys, secrets=read_secrets(runbook))  # fmt: skip
    results: list[UndoResult] = []
    try:
        _refuse_while_running(todo, events, session)
        undecided = [
            c.step.id for c in todo
            if c.state.status == "undo_in_doubt" and not c.step.check
            and not (options.rerun_in_doubt or options.skip_in_doubt)
        ]  # fmt: skip
        if undecided:
            raise Blocked(
                f"the undo of {', '.join(undecided)} was cut off and the step has no check:; see on its "
                "host whether the undo took effect, then roll back with --skip-in-doubt (it did) or "
                "--rerun-in-doubt (it did not)"
            )
        session.captures.update(state.captured)
        runner = Runner(session, options)
        _confirm(runner, run_id, todo)
        session.journal.append(
            "rollback_started", operator=options.operator, steps=[c.step.id for c in todo]
        )
        reporter.started(run_id, "rollback")
        for c in todo:
            if c.state.status == "undo_failed":
                reporter.warn(f"{c.step.id}: its undo failed last time; trying it again")
        return _undo_all(session, runner, run_id, todo, results, options)
    finally:
        session.close()


def _refuse_while_running(
    todo: list[_Candidate], events: Sequence[Mapping[str, Any]], session: Session
) -> None:
    """Blocked while a cut-off step, undo or check still runs, here or on its host: a rollback that
    ran the undo again meanwhile would run it twice at once (issue #10)."""
    starts = [i for i, e in enumerate(events) if e.get("event") == "rollback_started"]
    # An undo cut off ran in the last rollback: the step's own command ended long before (its pid
    # may be another process's by now), so only that rollback's processes count.
    last_rollback = events[starts[-1] :] if starts else events
    for c in todo:
        if c.state.status not in ("in_doubt", "undo_in_doubt"):
            continue
        since = last_rollback if c.state.status == "undo_in_doubt" else events
        where = still_running(since, c.step.id, session.transport, then="roll back")
        if where is not None:
            raise Blocked(
                f"{running_what(since, c.step.id)} is still running ({where}); wait for it to end "
                "or stop it, then roll back"
            )


def _confirm(runner: Runner, run_id: str, todo: list[_Candidate]) -> None:
    """Rollback is a gate of its own: asked at a terminal, --yes or --approve rollback otherwise."""
    undoable = [c.step.id for c in todo if _has_undo(c) and c.step.kind is not Kind.IRREVERSIBLE]
    prompt = f"Undo {len(undoable)} step(s) of run {run_id} ({', '.join(undoable) or 'none'})?"
    o = runner.o
    if GATE_ID in o.approve:
        verdict, via = "approved", "--approve"
    elif o.yes:
        verdict, via = "approved", "--yes"
    elif o.interactive:
        verdict, via = runner.ask_gate(GATE_ID, GateLevel.CONFIRM, prompt), "terminal"
    else:
        verdict, via = "refused", "none"
    runner.journal.append(
        "rollback_gate", prompt=prompt, answer=verdict, operator=o.operator, via=via
    )
    if verdict != "approved":
        why = (
            "the operator said no"
            if via == "terminal"
            else "no terminal to ask at; pass --yes (or --approve rollback) to roll back"
        )
        raise Blocked(f"rollback of run {run_id} not started: {why}")


def _undo_all(  # noqa: PLR0917 - private, one caller
    session: Session, runner: Runner, run_id: str, todo: list[_Candidate],
    results: list[UndoResult], options: RunOptions,
) -> RollbackOutcome:  # fmt: skip
    in_effect: list[str] = []
    for position, c in enumerate(todo):
        step = c.step
        if step.kind is Kind.IRREVERSIBLE:
            results.append(UndoResult(step.id, "stopped", "irreversible: the point of no return"))
            before = [x.step.id for x in todo[position + 1 :]]
            undone = sum(1 for r in results if r.status == "undone")
            message = (
                f"stopped at irreversible step {step.id} (the point of no return) after undoing "
                f"{undone} step(s); still done: {', '.join([step.id, *reversed(before)])}"
            )
            return _finish(session, run_id, ExitCode.BLOCKED, message, results, step.id, in_effect)
        if c.state.status == "undo_in_doubt":
            settled = _settle_in_doubt(runner, c, options)
            if settled is not None:
                results.append(settled)
                continue
        try:
            result = _undo_step(runner, step, c.data)
        except KeyboardInterrupt:
            results.append(UndoResult(step.id, "in_doubt", "cut off while undoing"))
            return _finish(session, run_id, ExitCode.INTERRUPTED,
                           f"interrupted while undoing {step.id}: its undo is in doubt; "
                           f"`opskit rollback {run_id}` asks its check: before running it again",
                           results, None, in_effect)  # fmt: skip
        if result.status == "in_effect":
            in_effect.append(step.id)
        results.append(result)
        if result.status == "failed":
            return _finish(session, run_id, ExitCode.NEGATIVE,
                           f"undo of {step.id} failed: {result.summary} (`opskit rollback {run_id}` tries it again)",
                           results, None, in_effect)  # fmt: skip
    done = [r for r in results if r.status == "undone"]
    restored = "; ".join(f"{r.step}: {r.summary}" for r in done if r.summary != "undone")
    message = f"rolled back: {len(done)} step(s) undone" + (f" ({restored})" if restored else "")
    if in_effect:
        return _finish(session, run_id, ExitCode.BLOCKED,
                       f"{message}; still in effect (no undo:): {', '.join(in_effect)}; undo by hand",
                       results, None, in_effect)  # fmt: skip
    return _finish(session, run_id, ExitCode.OK, message, results, None, in_effect)


def _settle_in_doubt(runner: Runner, c: _Candidate, options: RunOptions) -> UndoResult | None:
    """An undo cut off last time: its check: (or the operator's flag) says whether to run it again."""
    step = c.step
    if step.check:
        try:
            still_done, _ = runner.check_passes(step)
        except TransportError as exc:
            raise Blocked(f"cannot run the check of {step.id} (undo in doubt): {exc}") from None
        took = not still_done
        reason = "check: the change is gone" if took else "check: the change is still in place"
    else:
        took = options.skip_in_doubt
        reason = "--skip-in-doubt" if took else "--rerun-in-doubt"
    runner.journal.append("undo_in_doubt", step=step.id, decision="done" if took else "rerun",
                          reason=reason, operator=options.operator)  # fmt: skip
    if not took:
        return None
    summary = f"undo in doubt; {reason}: counted as undone"
    runner.journal.append("undo_finished", step=step.id, status="succeeded", summary=summary)
    runner.reporter.step_end(step.id, "undone", summary, 0.0)
    return UndoResult(step.id, "undone", summary)


def _finish(  # noqa: PLR0917 - private, one caller shape
    session: Session, run_id: str, code: ExitCode, message: str, results: list[UndoResult],
    stopped_at: str | None, in_effect: list[str],
) -> RollbackOutcome:  # fmt: skip
    session.journal.append(
        "rollback_finished", exit_code=int(code), message=message, stopped_at=stopped_at,
        in_effect=in_effect,
    )  # fmt: skip
    return RollbackOutcome(
        run_id, code, session.masker.text(message), results, stopped_at, in_effect
    )


def _no_undo_needed(step: Step) -> str | None:
    """Why a step without undo: is no change left in effect, or None when it is one."""
    if changes_nothing(step):
        return "nothing to undo (probe)"
    if step.manual and not step.kind_explicit:
        # Usually a call or a confirmation; a manual change that needs undoing says `kind: mutate`.
        return f"done by hand ({step.owner or 'someone'}): rollback cannot undo it"
    return None


def _undo_step(runner: Runner, step: Step, data: Mapping[str, Any] | None) -> UndoResult:
    if step.undo is None and not (step.uses and data is not None):
        if (why := _no_undo_needed(step)) is not None:
            runner.reporter.step_end(step.id, "nothing", why, 0.0)
            return UndoResult(step.id, "nothing", why)
        summary = "no undo: defined; its change stays in effect"
        runner.reporter.step_end(step.id, "in_effect", summary, 0.0)
        return UndoResult(step.id, "in_effect", summary)
    s = runner.s
    s.journal.append("undo_started", step=step.id)
    started = time.monotonic()
    try:
        runner.reporter.step_begin(
            step.id, f"undo {step.title}", step.on, _describe(runner, step, data)
        )
        ok, summary = _perform(runner, step, data)
    except KeyboardInterrupt:
        s.journal.append("undo_finished", step=step.id, status="in_doubt",
                         summary="cut off while undoing (Ctrl-C or SIGTERM)")  # fmt: skip
        raise
    except (OpskitError, ImportError) as exc:
        ok, summary = False, str(exc)
    except Exception as exc:  # noqa: BLE001 - a faulty undo fails its step, journaled, not the process
        uses = (step.undo.uses if step.undo else None) or step.uses
        ok, summary = False, f"{uses} crashed: {type(exc).__name__}: {exc}"
    status = "succeeded" if ok else "failed"
    s.journal.append("undo_finished", step=step.id, status=status, summary=summary)
    duration = round(time.monotonic() - started, 3)
    runner.reporter.step_end(
        step.id, "undone" if ok else "failed", s.masker.text(summary), duration
    )
    return UndoResult(step.id, "undone" if ok else "failed", s.masker.text(summary))


def _describe(runner: Runner, step: Step, data: Mapping[str, Any] | None) -> str:
    """The undo as the operator reads it: the rendered command (secrets as ***), or the action and the
    values it puts back."""
    view = runner.context(step, runner.s.display_view, "*")  # "*": per-host values shown by name
    if step.undo and step.undo.run:
        return render_command(step.undo.run, view).shown
    if step.undo and step.undo.uses:
        params = render_with(step.undo.uses, step.undo.with_, view)
        shown = " ".join(f"{k}={getattr(v, 'shown', v)}" for k, v in params.items())
        return runner.s.masker.text(f"{step.undo.uses} {shown}".strip())
    hosts = fleet_runner.undo_order(runner.fleet.of(step.id))
    if hosts:  # a fleet step: each host's own undo data
        return runner.s.masker.text(f"{step.uses} undo on {', '.join(hosts)}")
    described = getattr(_action_class(step.uses), "describe_undo", None)
    if described is not None and data:  # the action says what its journaled data means
        return runner.s.masker.text(f"{step.uses} undo: {described(data)}")
    return runner.s.masker.text(f"{step.uses} undo: {_restores(data or {})}")


def _action_class(uses: str | None) -> Any:
    try:
        return actions.load(uses or "")
    except (actions.UnknownAction, ImportError):
        return None


def _restores(data: Mapping[str, Any]) -> str:
    """What an action's undo puts back, from its journaled data ("name A back to 203.0.113.10 TTL 300")."""
    before = data.get("before")
    name = " ".join(str(data[k]) for k in ("name", "type") if data.get(k))
    if isinstance(before, Mapping) and "values" in before:
        values = ", ".join(map(str, before.get("values") or [])) or "nothing"
        ttl = f" TTL {before['ttl']}" if before.get("ttl") is not None else ""
        return f"{name} back to {values}{ttl}".strip()
    if before is None and "before" in data:
        return f"{name} removed (it did not exist before)".strip()
    return ", ".join(f"{k}={v}" for k, v in data.items()) or "its journaled state"


def _preview(  # noqa: PLR0917 - private, one caller
    run_id: str, state: RunState, runbook: Runbook, events: Sequence[Mapping[str, Any]],
    options: RunOptions, reporter: Reporter,
) -> RollbackOutcome:  # fmt: skip
    """What a rollback would undo, in order and with which values; nothing runs, nothing is journaled."""
    session = Session.open(runbook, run_id, run_dir(options.state_dir, run_id), options.state_dir, reporter,
                           options.operator, accept_new_host_keys=options.accept_new_host_keys,
                           secrets=read_secrets(runbook))  # fmt: skip
    try:
        session.captures.update(state.captured)
        runner = Runner(session, options)
        results: list[UndoResult] = []
        in_effect: list[str] = []
        for c in _candidates(state, runbook, events):
            if c.step.kind is Kind.IRREVERSIBLE:
                results.append(
                    UndoResult(c.step.id, "stopped", "irreversible: rollback stops here")
                )
                return RollbackOutcome(run_id, ExitCode.BLOCKED,
                                       f"would stop at irreversible step {c.step.id}", results, c.step.id, in_effect)  # fmt: skip
            if not _has_undo(c):
                if (why := _no_undo_needed(c.step)) is not None:
                    results.append(UndoResult(c.step.id, "nothing", why))
                else:
                    in_effect.append(c.step.id)
                    results.append(UndoResult(c.step.id, "in_effect", "no undo: its change stays"))
                continue
            note = {
                "undo_failed": " (failed last time)",
                "undo_in_doubt": " (in doubt: check decides)",
            }
            text = _describe(runner, c.step, c.data) + note.get(c.state.status, "")
            results.append(UndoResult(c.step.id, "would_undo", text))
        count = sum(1 for r in results if r.status == "would_undo")
        if in_effect:
            return RollbackOutcome(run_id, ExitCode.BLOCKED,
                                   f"would undo {count} step(s); still in effect after it: {', '.join(in_effect)}",
                                   results, None, in_effect)  # fmt: skip
        return RollbackOutcome(
            run_id, ExitCode.OK, f"would undo {count} step(s)", results, None, in_effect
        )
    finally:
        session.close()


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
                    on_start=runner.process_journaler(step.id, "undo"),
                )  # fmt: skip
            except TransportError as exc:
                return False, str(exc)
            if not res.ok:
                return False, f"undo exit {res.rc} on {label}"
            if host in runner.fleet.of(step.id):
                s.journal.append("host_undone", step=step.id, host=host)
        return True, "undone"
    summaries = []
    for host in hosts:
        actx = StepContext(s, step.id, host, dry_run=False, timeout_s=step.timeout_s, undoing=True)
        ctx = runner.context(step, s.secrets, host)
        record = runner.fleet.of(step.id).get(host or "")
        if record is not None:  # a fleet step: this host's own undo data
            data = record.undo
        shell_ctx = runner.context(step, s.shell_view, host)
        if undo is not None and undo.uses:
            action = actions.load(undo.uses).from_params(
                actions.Params(render_with(undo.uses, undo.with_, ctx, shell_ctx))
            )
            result = action.run(actx)
        else:
            action = actions.load(step.uses or "").from_params(
                actions.Params(render_with(step.uses, step.with_, ctx, shell_ctx))
            )
            undone = action.undo(actx, data or {})
            if undone is None:
                return False, f"{step.uses} cannot undo this step"
            result = undone
        if not result.ok:
            return False, result.summary
        if record is not None:
            s.journal.append("host_undone", step=step.id, host=host)
        summaries.append(result.summary)
    return True, "; ".join(x for x in summaries if x) or "undone"
