"""Continue a run from its journal: finished steps are not run again, an in-doubt step is never re-run silently.

A step is in doubt when it started and never finished (the process died, the connection dropped, Ctrl-C).
A step that changes nothing (a probe, `dns.check`, `dns.wait`, `traffic.drained`, `wait:`, a gate) simply
runs again: skipping it would drop a TTL wait or a drain verdict at 2 a.m. (issue #11). Otherwise its
`check:` decides whether it took effect; without one it is re-run only when `idempotent: true` or the
operator says `--rerun-in-doubt`, or marked skipped with `--skip-in-doubt` (brevdev/brev-cli#459 is the
double execution this prevents).

Everything is decided after the run's lock is taken, from the journal as it is then, and never while a
process the cut-off step started is still alive, on this machine or on the SSH host it ran on (issue #10).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from opskit.errors import Blocked, ExitCode, TransportError, UsageError
from opskit.fleet import limit
from opskit.fleet.runner import FleetState
from opskit.runbook.context import Reporter, Session, read_secrets
from opskit.runbook.engine import (
    Runner,
    RunOptions,
    RunOutcome,
    check_approvals,
    runbook_guard,
)
from opskit.runbook.journal import JOURNAL, read_journal, run_dir
from opskit.runbook.lock import RunLock, is_locked
from opskit.runbook.model import Kind, Runbook, Step
from opskit.runbook.plan import Plan
from opskit.runbook.rehearsal import rehearse
from opskit.runbook.replay import UNDO_TOUCHED, RunState, replay
from opskit.runbook.validate import load_runbook
from opskit.transport.base import Transport
from opskit.transport.process_probe import runs_still
from opskit.transport.supervisor import session_members

DONE_STATUSES = ("succeeded", "skipped")
SETTLE_S = 3.0


def changes_nothing(step: Step) -> bool:
    """A probe, a wait or a gate: running it again is always safe."""
    return step.kind is Kind.PROBE or not (step.run or step.uses or step.manual)


def in_doubt_action(step: Step, *, rerun: bool, skip: bool) -> str:
    """check | rerun | skip | refuse: what a resume does with a step that started and never finished."""
    if changes_nothing(step):
        return "rerun"
    if step.check:
        return "check"
    if step.idempotent or rerun:
        return "rerun"
    if skip:
        return "skip"
    return "refuse"


def load_for_resume(
    state_dir: Path, run_id: str, *, accept_changes: bool, lock_held: bool = False
) -> tuple[RunState, Runbook, list[dict[str, Any]]]:
    """The run's state and its runbook, refusing a dry-run or a runbook changed since the run started.

    `lock_held`: we hold the run's lock, so nobody else is driving it (a started step is in doubt).
    """
    directory = run_dir(state_dir, run_id)
    read = read_journal(directory / JOURNAL)
    state = replay(read.events, live=not lock_held and is_locked(directory))
    if state.mode != "run":
        raise UsageError(
            f"run {run_id} is a {state.mode} rehearsal: it changed nothing, so there is nothing to "
            "resume or roll back (list real runs with `opskit status`)"
        )
    start = next((e for e in read.events if e.get("event") == "run_started"), {})
    overrides = dict(start.get("overrides") or {})
    runbook = load_runbook(Path(state.runbook), overrides)
    if runbook.sha256 != state.sha256 and not accept_changes:
        raise UsageError(
            f"{state.runbook} changed since run {run_id} started (sha256 {state.sha256[:12]} -> "
            f"{runbook.sha256[:12]}); review the change, then resume with --accept-changes"
        )
    return state, runbook, read.events


def plan_resume(run_id: str, options: RunOptions, reporter: Reporter) -> Plan:
    """Rehearse what a resume would do: finished steps are `done`, captured values come from the journal."""
    state, runbook, events = load_for_resume(
        options.state_dir, run_id, accept_changes=options.accept_changes
    )
    done = _finished(state, runbook)
    in_doubt = {}
    for s in state.steps:
        step = runbook.step(s.id)
        if s.status == "in_doubt" and step is not None:
            in_doubt[s.id] = in_doubt_action(
                step, rerun=options.rerun_in_doubt, skip=options.skip_in_doubt
            )
    start = next((e for e in events if e.get("event") == "run_started"), {})
    options = replace(options, overrides=dict(start.get("overrides") or {}))
    facts: dict[str, list[Any]] = {}
    for ev in events:  # what the finished steps found or changed, as a resume will know it
        if ev.get("event") == "step_finished" and ev.get("facts"):
            for kind, value in dict(ev["facts"]).items():
                facts.setdefault(kind, []).append(value)
    return rehearse(runbook.path, options, reporter, done=frozenset(done), captures=state.captured,
                    in_doubt=in_doubt, facts=facts)  # fmt: skip


def still_running(
    events: Sequence[Mapping[str, Any]], step_id: str, transport: Callable[[str], Transport],
    only: Collection[str] | None = None, *, then: str = "resume",
) -> str | None:  # fmt: skip
    """Where a cut-off step's processes still run ("H: pid P, ..."), or None.

    A remote step's process is asked about over SSH (`transport(host)`); a host that cannot be asked
    is Blocked ("cannot tell"): resuming blindly could run the step twice. `only`: the hosts this
    resume works on (`--limit`); a host left out is not touched, so it is not asked either. `then`:
    the command that waits for the answer (resume, roll back), as the refusal names it.
    """
    started = [e for e in events if e.get("event") == "step_process" and e.get("step") == step_id]
    for host, ev in _unfinished_remote(events, step_id).items():
        if only is not None and host not in only:
            continue
        if (where := _still_running_remote(step_id, host, ev, transport, then)) is not None:
            return where
    here = socket.gethostname()
    if not started or started[-1].get("remote") or started[-1].get("host") != here:
        return None
    session = int(started[-1].get("pid") or 0)
    # Right after a crash the step's supervisor may still be ending it (SIGTERM, 2 s, SIGKILL).
    deadline = time.monotonic() + SETTLE_S
    while (pids := session_members(session)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return f"{here}: pid {', '.join(map(str, pids))}" if pids else None


def running_what(events: Sequence[Mapping[str, Any]], step_id: str) -> str:
    """What of a step still runs, from its last journaled process: "step X", "the undo of step X" or
    "the check of step X" (rollback runs undos, resume and rollback run checks)."""
    kinds = [
        e.get("kind")
        for e in events
        if e.get("event") == "step_process" and e.get("step") == step_id
    ]
    kind = kinds[-1] if kinds else None
    return f"the {kind} of step {step_id}" if kind in ("undo", "check") else f"step {step_id}"


def _unfinished_remote(
    events: Sequence[Mapping[str, Any]], step_id: str
) -> dict[str, Mapping[str, Any]]:
    """Per host, the step's last remote process, unless the host finished after it (a fleet step)."""
    last: dict[str, Mapping[str, Any]] = {}
    for ev in events:
        if ev.get("step") != step_id:
            continue
        if ev.get("event") == "step_process" and ev.get("remote"):
            last[str(ev.get("host"))] = ev
        elif ev.get("event") == "host_finished":
            last.pop(str(ev.get("host")), None)
    return last


def _still_running_remote(
    step_id: str, host: str, ev: Mapping[str, Any], transport: Callable[[str], Transport], then: str
) -> str | None:
    pid = int(ev.get("pid") or 0)
    at = f" ({ev['address']}:{ev.get('port')})" if ev.get("address") else ""
    where = f"{host}{at}: pid {pid} since {ev.get('ts')}"
    try:
        conn = transport(host)
        # Right after a crash the host may still be ending the step (its agent: SIGTERM, 2 s, SIGKILL).
        deadline = time.monotonic() + SETTLE_S
        while (alive := runs_still(conn, pid, ev.get("start_ticks"), ev.get("boot_id"))) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
    except TransportError as exc:
        why = str(exc)
    except KeyError:
        why = f"{host} is no longer in the runbook's hosts:"
    else:
        return where if alive else None
    raise Blocked(
        f"cannot tell whether step {step_id} still runs on {where} ({why}); {then} once {host} "
        "answers over SSH: going on blindly could run the step twice"
    )


def resume(run_id: str, options: RunOptions, reporter: Reporter) -> RunOutcome:
    """Continue a run after its last finished step."""
    directory = run_dir(options.state_dir, run_id)
    lock = RunLock(directory, options.operator)
    try:
        return _resume_locked(run_id, directory, options, reporter)
    finally:
        lock.release()


def _resume_locked(
    run_id: str, directory: Path, options: RunOptions, reporter: Reporter
) -> RunOutcome:
    state, runbook, events = load_for_resume(
        options.state_dir, run_id, accept_changes=options.accept_changes, lock_held=True
    )
    check_approvals(runbook, options.approve)
    touched = [s.id for s in state.steps if s.status in UNDO_TOUCHED]
    if touched:
        # A step whose undo ran (or failed, or was cut off) must never be re-applied behind the
        # rollback's back (issue #10).
        raise Blocked(
            f"run {run_id} was rolled back ({', '.join(touched)}); resuming would redo them: "
            f"finish the rollback with `opskit rollback {run_id}` or start a new run with "
            f"`opskit run {runbook.path}`"
        )
    guard = runbook_guard(runbook, options)
    try:
        return _resume_guarded(run_id, directory, options, reporter, state, runbook, events)
    finally:
        if guard is not None:
            guard.release()


def _resume_guarded(  # noqa: PLR0917 - private: the state loaded under the locks
    run_id: str, directory: Path, options: RunOptions, reporter: Reporter, state: RunState,
    runbook: Runbook, events: list[dict[str, Any]],
) -> RunOutcome:  # fmt: skip
    if state.state == "succeeded":
        return RunOutcome(
            run_id, "succeeded", ExitCode.OK, f"run {run_id} already succeeded; nothing to resume"
        )
    secrets = read_secrets(runbook)
    session = Session.open(runbook, run_id, directory, options.state_dir, reporter, options.operator,
                           accept_new_host_keys=options.accept_new_host_keys, secrets=secrets)  # fmt: skip
    try:
        decisions = _decide(run_id, options, state, runbook, events, session.transport)
        session.captures.update(state.captured)
        for ev in events:
            if ev.get("event") == "step_finished" and ev.get("facts"):
                session.add_facts(dict(ev["facts"]))
        session.journal.append(
            "resumed", operator=options.operator, host=socket.gethostname(), pid=os.getpid(),
            sha256=runbook.sha256, accepted_changes=runbook.sha256 != state.sha256,
            restored=sorted(state.captured),
        )  # fmt: skip
        reporter.started(run_id, "resume")
        done = _finished(state, runbook)
        runner = Runner(session, options)
        for step, action in decisions:
            done |= _settle(runner, step, action)
        return runner.execute(done)
    finally:
        session.close()


def _decide(  # noqa: PLR0917 - private: the state loaded under the locks
    run_id: str, options: RunOptions, state: RunState, runbook: Runbook,
    events: Sequence[Mapping[str, Any]], transport: Callable[[str], Transport],
) -> list[tuple[Step, str]]:  # fmt: skip
    """What to do with each in-doubt step; Blocked while one still runs, here or on its host."""
    decisions: list[tuple[Step, str]] = []
    limited = None
    if runbook.limit is not None:
        limited = frozenset(limit.select(runbook.limit, tuple(runbook.hosts), runbook.groups))
    fleet = FleetState.load(run_dir(options.state_dir, run_id) / JOURNAL)
    for s in state.steps:
        step = runbook.step(s.id)
        if s.status != "in_doubt" or step is None:
            continue
        where = still_running(events, step.id, transport, limited)
        if where is not None:
            raise Blocked(
                f"{running_what(events, step.id)} is still running ({where}); wait for it to end "
                "or stop it, then resume"
            )
        if fleet.of(s.id):
            continue  # a fleet step is settled host by host when it runs again (opskit/fleet/runner.py)
        action = in_doubt_action(step, rerun=options.rerun_in_doubt, skip=options.skip_in_doubt)
        if action == "refuse":
            raise Blocked(
                f"step {step.id} is in doubt (it started at {s.started_at} and never finished) and has no check:; "
                "verify by hand whether it took effect, then resume with --rerun-in-doubt or --skip-in-doubt"
            )
        if action == "skip" and step.capture and step.capture not in options.set_values:
            raise UsageError(
                f"step {step.id} captures {step.capture}, which later steps use; to skip it give "
                f"the value it would have captured: --set {step.capture}=VALUE"
            )
        decisions.append((step, action))
    return decisions


def _finished(state: RunState, runbook: Runbook) -> set[str]:
    """The steps a resume does not run again: done, skipped, or a failure the runbook went on past."""
    return {
        s.id
        for s in state.steps
        if s.status in DONE_STATUSES or (s.status == "failed" and _accepted_failure(runbook, s.id))
    }


def _accepted_failure(runbook: Runbook, step_id: str) -> bool:
    step = runbook.step(step_id)  # continue_on_error: the run went on past it
    return step is not None and step.continue_on_error


def _settle(runner: Runner, step: Step, action: str) -> set[str]:
    """Journal the decision on an in-doubt step; the ids that now count as done."""
    journal = runner.journal
    if action == "check":
        try:
            passed, why = runner.check_passes(step)
        except TransportError as exc:
            raise Blocked(f"cannot run the check of in-doubt step {step.id}: {exc}") from None
        decision = "done" if passed else "rerun"
        journal.append(
            "in_doubt", step=step.id, decision=decision, reason=why, operator=runner.o.operator
        )
        if passed:
            journal.append("step_finished", step=step.id, status="succeeded", attempts=1, duration_s=0.0,
                           summary=f"in doubt; {why}")  # fmt: skip
            runner.reporter.step_end(step.id, "succeeded", f"in doubt; {why}", 0.0)
            return {step.id}
        return set()
    if action == "rerun" and changes_nothing(step):
        reason = "it changes nothing (probe, wait or gate)"
    else:
        reason = {
            "rerun": "idempotent: true" if step.idempotent else "--rerun-in-doubt",
            "skip": "--skip-in-doubt",
        }[action]
    journal.append(
        "in_doubt", step=step.id, decision=action, reason=reason, operator=runner.o.operator
    )
    if action == "skip":
        captured = {}
        if step.capture:  # the value the operator gave with --set stands in for the capture
            captured[step.capture] = runner.o.set_values[step.capture]
            runner.s.captures.update(captured)
        journal.append("step_finished", step=step.id, status="skipped", attempts=0, duration_s=0.0,
                       summary="in doubt; skipped by the operator (--skip-in-doubt)",
                       captured=captured)  # fmt: skip
        runner.reporter.step_end(step.id, "skipped", "in doubt; skipped (--skip-in-doubt)", 0.0)
        return {step.id}
    return set()
