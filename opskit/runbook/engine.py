"""Run a runbook for real, one journaled step at a time; `resume.py` continues one, `rehearsal.py` plans one.

The order of writes is the safety argument: `step_started` is fsynced before a step's command starts and
`step_finished` after it ends, so after any crash a step is either finished (with its outcome), in doubt
(started, never finished), or never started. Nothing else is stored.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit import __version__, actions
from opskit.durations import format_seconds
from opskit.errors import (
    ExitCode,
    HostKeyError,
    OpskitError,
    TransportDropped,
    TransportError,
    UsageError,
)
from opskit.fleet import hosts as fleet_hosts
from opskit.fleet import runner as fleet_runner
from opskit.fleet import selection as fleet_selection
from opskit.runbook import gates
from opskit.runbook.context import LOCAL, Reporter, Session, StepContext, read_secrets
from opskit.runbook.journal import new_run_id, private_dir, read_journal, runs_dir, utc_now
from opskit.runbook.lock import RunbookLock, RunLock
from opskit.runbook.model import GateLevel, Kind, Runbook, Step
from opskit.runbook.notify import notify
from opskit.runbook.processes import process_journaler
from opskit.runbook.replay import replay
from opskit.runbook.scope import render_hosts, render_with, step_context
from opskit.runbook.shell import Command, render_command, secret_env_name
from opskit.runbook.templates import (
    TemplateProblem,
    render,
    truth,
)
from opskit.runbook.validate import load_runbook
from opskit.runbook.waits import step_timeout_s, wait_left_s
from opskit.transport.base import StartSink


@dataclass(frozen=True)
class RunOptions:
    """Everything a run/resume/plan needs besides the runbook."""

    state_dir: Path
    operator: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    yes: bool = False
    approve: frozenset[str] = frozenset()
    interactive: bool = False
    accept_new_host_keys: bool = False
    offline: bool = False
    rerun_in_doubt: bool = False
    skip_in_doubt: bool = False
    set_values: Mapping[str, str] = field(default_factory=dict)  # resume --set: a skipped capture
    accept_changes: bool = False
    allow_concurrent: bool = False  # run/resume while another run of the same runbook is live
    window: str | None = None  # plan only: "02:00-05:00", checked against the forecast


@dataclass(frozen=True)
class RunOutcome:
    """How a run (or resume) ended; `exit_code` is what the command exits with."""

    run_id: str
    state: str  # succeeded | failed | aborted | interrupted
    exit_code: ExitCode
    message: str = ""
    failed_step: str | None = None
    resume_hint: str | None = None
    next_steps: list[str] = field(default_factory=list)  # what to do now, as commands to copy


class Stop(Exception):
    """Ends the run early with a state and exit code."""

    def __init__(self, state: str, code: ExitCode, message: str, step: str | None = None) -> None:
        super().__init__(message)
        self.state, self.code, self.message, self.step = state, code, message, step


@dataclass
class Attempt:
    """The outcome of one attempt of a step on one host."""

    ok: bool
    summary: str
    rc: int | None = None
    stdout: str = ""
    timed_out: bool = False
    blocked: bool = False
    values: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    undo: Mapping[str, Any] | None = None
    per_host: Mapping[str, Any] | None = None  # a fleet step: each host's stdout, for `capture:`
    in_doubt: bool = False  # a fleet host whose link dropped while its command ran


def where_it_runs() -> dict[str, Any]:
    """The machine and process driving a step, journaled with `step_started` (the time is the event's)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _reachability_failure(exc: BaseException) -> bool:
    """Only a host that could not be reached is retried by default: nothing ran there."""
    return isinstance(exc, TransportError) and not isinstance(exc, HostKeyError | TransportDropped)


def step_infos(runbook: Runbook) -> list[dict[str, Any]]:
    """The plan of a run as journaled in `run_started` (so `status` needs no runbook file)."""
    return [
        {"id": s.id, "name": s.name, "kind": str(s.kind), "owner": s.owner, "hosts": list(s.on),
         "has_check": bool(s.check), "idempotent": s.idempotent,
         "undoable": s.undo is not None or (bool(s.uses) and s.kind is not Kind.PROBE)}
        for s in runbook.steps
    ]  # fmt: skip


def open_new_run(runbook: Runbook, options: RunOptions, reporter: Reporter, mode: str,
                 secrets: Mapping[str, str]) -> tuple[Session, RunLock]:  # fmt: skip
    """Create runs/<ID>/ (0700), take its lock, journal `run_started`."""
    run_id = new_run_id(utc_now())
    private_dir(options.state_dir)
    directory = private_dir(private_dir(runs_dir(options.state_dir)) / run_id)
    lock = RunLock(directory, options.operator)
    session = Session.open(runbook, run_id, directory, options.state_dir, reporter, options.operator,
                           accept_new_host_keys=options.accept_new_host_keys, secrets=secrets)  # fmt: skip
    session.journal.append(
        "run_started", run_id=run_id, runbook=str(runbook.path), runbook_name=runbook.name,
        sha256=runbook.sha256, mode=mode, operator=options.operator, host=socket.gethostname(),
        pid=os.getpid(), version=__version__, overrides=dict(options.overrides),
        vars={k: v for k, v in session.base.items() if k not in ("run_id", "operator")},
        steps=step_infos(runbook),
        inventories=[str(p) for p in fleet_selection.SELECTION.get().inventories],
    )  # fmt: skip
    reporter.started(run_id, mode)
    return session, lock


def check_approvals(runbook: Runbook, approve: frozenset[str]) -> None:
    """--approve of a step that is not in the runbook is a typo that would leave a gate closed: exit 2."""
    unknown = sorted(a for a in approve if runbook.step(a) is None)
    if unknown:
        gated = [s.id for s in runbook.steps if s.gate or s.manual]
        raise UsageError(
            f"--approve {unknown[0]}: no such step in {runbook.path} "
            f"(steps with a gate: {', '.join(gated) or 'none'})"
        )


def run(path: Path, options: RunOptions, reporter: Reporter) -> RunOutcome:
    """Run a runbook from the start (raises RunbookProblems before anything runs when it is invalid)."""
    runbook = load_runbook(path, options.overrides)
    check_approvals(runbook, options.approve)
    secrets = read_secrets(runbook)
    guard = runbook_guard(runbook, options)
    try:
        session, lock = open_new_run(runbook, options, reporter, "run", secrets)
        if guard is not None:
            guard.name_run(session.run_id)
        try:
            return Runner(session, options).execute(done=set())
        finally:
            session.close()
            lock.release()
    finally:
        if guard is not None:
            guard.release()


def runbook_guard(runbook: Runbook, options: RunOptions) -> RunbookLock | None:
    """The one-live-run-per-runbook lock (None with --allow-concurrent)."""
    if options.allow_concurrent:
        return None
    private_dir(options.state_dir)
    return RunbookLock(options.state_dir, runbook.path, options.operator)


class Runner:
    """Executes the steps of one session in order."""

    def __init__(self, session: Session, options: RunOptions) -> None:
        self.s = session
        self.o = options
        self.journal = session.journal
        self.reporter = session.reporter
        # Per-host records of fleet steps, from this run's journal (a resume continues host by host).
        self.fleet = fleet_runner.FleetState.load(session.journal.path)

    def execute(self, done: set[str]) -> RunOutcome:
        continued: list[str] = []  # failed steps marked continue_on_error: said in the final line
        try:
            for step in self.s.runbook.steps:
                if step.id in done:
                    continue
                attempt = self.step(step)
                if not attempt.ok and step.continue_on_error:
                    continued.append(step.id)
                elif not attempt.ok:
                    code = ExitCode.BLOCKED if attempt.blocked else ExitCode.NEGATIVE
                    raise Stop("failed", code, f"step {step.id} failed: {attempt.summary}", step.id)
        except Stop as stop:
            return self.finish(stop.state, stop.code, stop.message, stop.step)
        except KeyboardInterrupt:
            return self.finish("interrupted", ExitCode.INTERRUPTED, "interrupted (Ctrl-C)")
        if continued:
            failed = ", ".join(continued)
            return self.finish(
                "succeeded",
                ExitCode.OK,
                f"all steps done; failed but continued (continue_on_error): {failed}",
            )
        return self.finish("succeeded", ExitCode.OK, "all steps done")

    def finish(
        self, state: str, code: ExitCode, message: str, step: str | None = None
    ) -> RunOutcome:
        hint = None if state == "succeeded" else f"opskit resume {self.s.run_id}"
        notify(self.s, "run_finished", f"run {state}: {message}")
        self.journal.append(
            "run_finished", state=state, exit_code=int(code), message=message, resume_hint=hint
        )
        # The advice is replayed from the journal, so `opskit status` later says exactly the same.
        advice = replay(read_journal(self.journal.path).events).next_steps
        return RunOutcome(
            self.s.run_id, state, code, self.s.masker.text(message), step, hint, advice
        )

    # --- one step -------------------------------------------------------------------------------------

    def context(
        self, step: Step, view: Mapping[str, Any], host: str | None = None
    ) -> dict[str, Any]:
        ctx = step_context(step, self.s.base, view, self.s.captures)
        if (
            self.s.runbook.groups
            or any(h.vars for h in self.s.runbook.hosts.values())
            or self.fleet.captures
        ):
            ctx.update(fleet_hosts.host_context(self.s.runbook, host, self.fleet.captures))
        return ctx

    def hosts_of(self, step: Step, ctx: Mapping[str, Any]) -> tuple[str, ...]:
        """The step's hosts: `on:` rendered, groups expanded, `--limit` applied."""
        return fleet_hosts.expand(render_hosts(step, ctx), self.s.runbook)

    def step(self, step: Step) -> Attempt:
        started = time.monotonic()
        try:
            ctx = self.context(step, self.s.secrets)
            if step.when is not None and not truth(step.when, ctx):
                self.journal.append("step_finished", step=step.id, status="skipped", attempts=0, duration_s=0.0,
                                    summary="when: is false")  # fmt: skip
                self.reporter.step_end(step.id, "skipped", "when: is false", 0.0)
                return Attempt(ok=True, summary="skipped")
            hosts = self.hosts_of(step, ctx)
            if step.on and not hosts:
                self.journal.append("step_finished", step=step.id, status="skipped", attempts=0, duration_s=0.0,
                                    summary="no host left after --limit")  # fmt: skip
                self.reporter.step_end(step.id, "skipped", "no host left after --limit", 0.0)
                return Attempt(ok=True, summary="skipped")
            display = self.display_command(step)
        except TemplateProblem as exc:
            # jinja's message may quote a rendered value, and the real secrets were in the context.
            problem = self.s.masker.text(str(exc))
            self.journal.append("step_finished", step=step.id, status="failed", attempts=0, duration_s=0.0,
                                summary=problem)  # fmt: skip
            self.reporter.step_end(step.id, "failed", problem, 0.0)
            return Attempt(ok=False, summary=problem)
        if step.gate or step.manual:
            self.gate(step)
        self.reporter.step_begin(step.id, step.title, hosts, display)
        try:
            result, attempts = self.perform(step, ctx, hosts, display)
        except KeyboardInterrupt:
            self.journal.append("step_finished", step=step.id, status="in_doubt", attempts=1,
                                duration_s=round(time.monotonic() - started, 3),
                                summary="stopped by Ctrl-C while it ran")  # fmt: skip
            raise Stop("interrupted", ExitCode.INTERRUPTED,
                       f"interrupted while {step.id} ran: it may have partly taken effect", step.id) from None  # fmt: skip
        except TransportDropped as exc:
            self.journal.append("step_finished", step=step.id, status="in_doubt", attempts=1,
                                duration_s=round(time.monotonic() - started, 3), summary=str(exc))  # fmt: skip
            raise Stop("failed", ExitCode.NEGATIVE,
                       f"{exc}: step {step.id} is in doubt; check by hand, then resume", step.id) from None  # fmt: skip
        duration = round(time.monotonic() - started, 3)
        status = "succeeded" if result.ok else "failed"
        captured: dict[str, Any] = {}
        if result.ok and step.capture and result.per_host is not None:
            # A fleet step: `{{ name }}` is every host's value in order, `hostvars.HOST.name` one host's.
            captured[step.capture] = list(result.per_host.values())
            self.s.captures.update(captured)
        elif result.ok and step.capture:
            captured[step.capture] = dict(result.values) if step.uses else result.stdout.strip()
            self.s.captures.update(captured)
        self.s.add_facts(result.facts)
        self.journal.append(
            "step_finished", step=step.id, status=status, rc=result.rc, attempts=attempts, duration_s=duration,
            summary=result.summary, captured=captured, values=dict(result.values), facts=dict(result.facts),
            undo=None if result.undo is None else dict(result.undo), timed_out=result.timed_out,
        )  # fmt: skip
        summary = result.summary
        if not result.ok and step.continue_on_error:
            summary += " (continue_on_error: going on)"
        self.reporter.step_end(step.id, status, self.s.masker.text(summary), duration)
        if not result.ok and not step.continue_on_error:  # an expected "no" is not news
            notify(self.s, "step_failed", f"step {step.id} failed: {summary}")
        return result

    def display_command(self, step: Step, view: Mapping[str, Any] | None = None) -> str | None:
        """What the operator sees for the step: the command with secrets as ***."""
        view = (
            self.context(step, self.s.display_view, fleet_hosts.EVERY_HOST)
            if view is None
            else view
        )
        return self.s.masker.text(self._display(step, view) or "") or None

    def _display(self, step: Step, view: Mapping[str, Any]) -> str | None:
        if step.run:
            return render_command(step.run, view).shown
        if step.uses:
            params = render_with(step.uses, step.with_, view)
            try:
                described = actions.load(step.uses).from_params(actions.Params(params)).describe()
            except Exception:  # noqa: BLE001 - only the display falls back; the run reports the real problem
                described = " ".join(f"{k}={v}" for k, v in params.items())
            return f"{step.uses}: {described}" if described else step.uses
        if step.manual:
            return "manual: " + render(step.manual, view)
        if step.wait_s is not None:
            return f"wait {format_seconds(step.wait_s)}"
        return None

    def gate(self, step: Step) -> None:
        level = step.gate.level if step.gate else GateLevel.CONFIRM
        view = self.context(step, self.s.display_view)
        if step.manual:
            who = f" ({step.owner})" if step.owner else ""
            prompt = f"MANUAL{who}: {render(step.manual, view)} Done?"
        else:
            prompt = render(step.gate.prompt if step.gate else "", view)
        other = step.owner if step.manual and step.owner and step.owner != self.o.operator else None
        decision = gates.decide(step.id, level, approved=self.o.approve, yes=self.o.yes,
                                interactive=self.o.interactive, someone_else=other)  # fmt: skip
        verdict, via = decision.verdict, decision.via
        if verdict == "ask":
            notify(self.s, "gate", f"gate {step.id} is waiting for {self.o.operator}: {prompt}")
            verdict, via = self.ask_gate(step.id, level, prompt), "terminal"
        self.journal.append("gate", step=step.id, level=str(level), prompt=prompt, answer=verdict,
                            operator=self.o.operator, via=via or "none", reason=decision.reason)  # fmt: skip
        if verdict != "approved":
            why = decision.reason or "the operator said no"
            if step.manual:  # say who must act and what to confirm, not only that a gate said no
                who = step.owner or "someone"
                message = f"stopped at manual step {step.id}: {who} must: {render(step.manual, view)} ({why})"
            else:
                message = f"stopped at gate {step.id}: {why}"
            raise Stop("aborted", ExitCode.BLOCKED, message, step.id)

    def ask_gate(self, step_id: str, level: GateLevel, prompt: str) -> str:
        """approved | refused, from the terminal; a typo asks again (Ctrl-C propagates: exit 130)."""
        question = gates.question(step_id, level, prompt)
        for _ in range(gates.TRIES):
            meaning = gates.judge(step_id, level, self.reporter.ask(question))
            if meaning != "again":
                return "approved" if meaning == "yes" else "refused"
            self.reporter.warn(gates.retry_hint(step_id, level))
        return "refused"

    def perform(self, step: Step, ctx: Mapping[str, Any], hosts: tuple[str, ...],
                display: str | None) -> tuple[Attempt, int]:  # fmt: skip
        if step.run:
            return self.on_hosts(
                step, hosts, lambda host, n: self.command(step, ctx, host, display, n)
            )
        if step.uses and fleet_runner.is_fleet(step, hosts):
            # Each host renders `with:` with its own values (inventory_hostname, host vars).
            return self.on_hosts(
                step, hosts, lambda host, n: self.host_action(step, host, display, n)
            )
        if step.uses:
            try:
                params = render_with(
                    step.uses, step.with_, ctx, self.context(step, self.s.shell_view)
                )
                action = actions.load(step.uses).from_params(actions.Params(params))
            except (OpskitError, ImportError) as exc:
                return Attempt(ok=False, summary=f"{step.uses}: {self.s.masker.text(str(exc))}"), 0
            return self.on_hosts(
                step, hosts, lambda host, n: self.action(step, action, host, display, n)
            )
        self.journal.append("step_started", step=step.id, attempt=1, hosts=list(hosts),
                            command=display, **where_it_runs())  # fmt: skip
        if step.wait_s is not None:
            return self.wait(step, step.wait_s), 1
        return Attempt(ok=True, summary="confirmed" if step.manual else "gate passed"), 1

    def wait(self, step: Step, total_s: float) -> Attempt:
        left_s = wait_left_s(read_journal(self.journal.path).events, step.id, total_s, utc_now())
        deadline = time.monotonic() + left_s  # a resumed wait waits only what is left of it
        while (left := deadline - time.monotonic()) > 0:
            self.reporter.progress(
                step.id,
                f"waiting, {format_seconds(left)} left",
                1 - left / total_s if total_s else 1.0,
            )
            time.sleep(min(left, 0.5))
        resumed = (
            "" if left_s >= total_s else f" (the last {format_seconds(left_s)} after a resume)"
        )
        return Attempt(ok=True, summary=f"waited {format_seconds(total_s)}{resumed}")

    def on_hosts(self, step: Step, hosts: tuple[str, ...],
                 once: Callable[[str | None, int], Attempt]) -> tuple[Attempt, int]:  # fmt: skip
        """Each host in turn, each with the step's retry policy; the first failing host ends the step."""
        if fleet_runner.is_fleet(step, hosts):
            return fleet_runner.run_on_hosts(self, step, hosts, once)
        result, most = Attempt(ok=True, summary=""), 0
        for host in hosts or (None,):
            result, attempts = self.with_retry(step, host, once)
            most = max(most, attempts)
            if not result.ok:
                break
        return result, most

    def with_retry(self, step: Step, host: str | None,
                   once: Callable[[str | None, int], Attempt]) -> tuple[Attempt, int]:  # fmt: skip
        policy = step.retry
        count = 0

        def attempt() -> Attempt:
            nonlocal count
            count += 1
            try:
                return once(host, count)
            except HostKeyError as exc:
                return Attempt(ok=False, summary=str(exc))
            except TransportDropped:
                raise  # the command may have run: in doubt, never a plain failure or a retry
            except TransportError as exc:
                if count >= policy.attempts:
                    return Attempt(ok=False, summary=str(exc))
                raise

        if policy.attempts <= 1:
            return attempt(), count
        import tenacity  # noqa: PLC0415 - imported on first use, keeps start-up fast

        wait: Any = (
            tenacity.wait_exponential(multiplier=policy.delay_s, max=policy.max_delay_s)
            if policy.backoff == "exponential"
            else tenacity.wait_fixed(policy.delay_s)
        )
        retry: Any = tenacity.retry_if_exception(_reachability_failure)
        if policy.on == "any":
            retry = retry | tenacity.retry_if_result(lambda r: not r.ok)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts), wait=wait, retry=retry, reraise=True,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            before_sleep=lambda state: self.reporter.warn(f"{step.id}: attempt {state.attempt_number} failed, retrying"),
        )  # fmt: skip
        return retrying(attempt), count

    def command(self, step: Step, ctx: Mapping[str, Any], host: str | None, display: str | None,
                attempt: int) -> Attempt:  # fmt: skip
        label = host or LOCAL
        command = render_command(step.run or "", self.context(step, self.s.shell_view, host))
        env = self.environment(step, ctx, command)
        self.journal.append("step_started", step=step.id, attempt=attempt, hosts=[label],
                            command=display, **where_it_runs())  # fmt: skip
        transport = self.s.transport(host)
        res = transport.run(command.text, env=env, timeout_s=step.timeout_s,
                            on_output=self.s.sink(step.id, label),
                            on_start=self.process_journaler(step.id))  # fmt: skip
        if res.timed_out:
            summary = f"timed out after {step.timeout_s:g}s on {label}"
        elif res.rc == 0:
            summary = f"exit 0 on {label}"
        else:
            summary = f"exit {res.rc} on {label}"
        return Attempt(
            ok=res.ok, summary=summary, rc=res.rc, stdout=res.stdout, timed_out=res.timed_out
        )

    def process_journaler(self, step_id: str, kind: str | None = None) -> StartSink:
        """The `on_start` of a command run for `step_id`: journals where its processes live
        (`step_process`), so `resume` and `rollback` refuse while they still run (issue #10)."""
        return process_journaler(self.journal, step_id, kind)

    def environment(self, step: Step, ctx: Mapping[str, Any], command: Command) -> dict[str, str]:
        """Secrets the command refers to (as $OPSKIT_SECRET_*) plus the step's `env:`, rendered."""
        env = {k: str(render(v, ctx)) for k, v in step.env.items()}
        for name in command.secrets & set(self.s.secrets):
            env[secret_env_name(name)] = self.s.secrets[name]
        return env

    def host_action(
        self, step: Step, host: str | None, display: str | None, attempt: int
    ) -> Attempt:
        """A fleet step's action on one host, its `with:` rendered with that host's values."""
        try:
            params = render_with(
                step.uses,
                step.with_,
                self.context(step, self.s.secrets, host),
                self.context(step, self.s.shell_view, host),
            )
            action = actions.load(step.uses or "").from_params(actions.Params(params))
        except (OpskitError, ImportError, TemplateProblem) as exc:
            return Attempt(ok=False, summary=f"{step.uses}: {self.s.masker.text(str(exc))}")
        return self.action(step, action, host, display, attempt)

    def action(
        self, step: Step, action: Any, host: str | None, display: str | None, attempt: int
    ) -> Attempt:
        self.journal.append("step_started", step=step.id, attempt=attempt, hosts=[host or LOCAL],
                            command=display, **where_it_runs())  # fmt: skip
        timeout_s = step_timeout_s(step, action)  # a waiting action's own timeout governs
        actx = StepContext(self.s, step.id, host, dry_run=False, timeout_s=timeout_s)
        try:
            result = action.run(actx)
        except (TransportError, KeyboardInterrupt):
            raise
        except OpskitError as exc:
            return Attempt(ok=False, summary=str(exc), blocked=exc.exit_code == ExitCode.BLOCKED)
        except Exception as exc:  # noqa: BLE001 - a faulty action fails its step, journaled, not the process
            return Attempt(ok=False, summary=f"{step.uses} crashed: {type(exc).__name__}: {exc}")
        for line in (result.detail or "").splitlines():
            self.s.emit(step.id, host or LOCAL, "stdout", line)
        timed_out = actx.timed_out and not result.ok
        summary = (
            f"timed out after {format_seconds(timeout_s or 0)}: {result.summary}"
            if timed_out
            else result.summary
        )
        return Attempt(ok=result.ok, summary=summary, blocked=result.blocked, timed_out=timed_out,
                       values=result.values, facts=result.facts, undo=result.undo)  # fmt: skip

    def check_passes(self, step: Step, hosts: tuple[str, ...] | None = None) -> tuple[bool, str]:
        """Run the step's `check:` on its hosts: exit 0 everywhere means the step took effect."""
        ctx = self.context(step, self.s.secrets)
        for host in (self.hosts_of(step, ctx) if hosts is None else hosts) or (None,):
            command = render_command(step.check or "", self.context(step, self.s.shell_view, host))
            env = self.environment(step, ctx, command)
            label = host or LOCAL
            res = self.s.transport(host).run(command.text, env=env, timeout_s=step.timeout_s,
                                             on_output=self.s.sink(step.id, label),
                                             on_start=self.process_journaler(step.id, "check"))  # fmt: skip
            if not res.ok:
                return False, f"check failed on {label} (exit {res.rc}): running it again"
        return True, "check passed: it took effect, not running it again"
