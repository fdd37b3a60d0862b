"""`opskit plan` / `run --dry-run`: every step rendered, probes executed for real, nothing else executed.

The rehearsal is journaled like a run (mode `dry-run`), so a reviewer can sign off on what was planned.
A probe's capture is real (it ran), so later steps that use it are planned with the real value; a capture of
a mutating step is not known yet, so steps that need it are `unknown` and show `<name>` in their command.

The rehearsal keeps a simulated clock: each step is rehearsed at the time it would start (now + the predicted
waits of the steps before it), and the facts a would-run step would produce (a TTL it lowers, a switch it
makes) are known to the steps after it, so a drain after a simulated switch is predicted from the lowered
TTL, not from the TTL the servers still serve before the rehearsal changed nothing (issue #11, point 3).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opskit import actions
from opskit.durations import format_seconds
from opskit.errors import OpskitError, TransportError
from opskit.fleet import hosts as fleet_hosts
from opskit.runbook import plan as P
from opskit.runbook import window
from opskit.runbook.context import LOCAL, Reporter, Session, StepContext, read_secrets
from opskit.runbook.engine import Runner, RunOptions, open_new_run
from opskit.runbook.model import Kind, Step
from opskit.runbook.replay import past_durations
from opskit.runbook.scope import render_with, step_context
from opskit.runbook.shell import Raw
from opskit.runbook.templates import (
    TemplateProblem,
    expression_names,
    is_template,
    names,
    render,
    truth,
)
from opskit.runbook.validate import load_runbook


def rehearse(path: Path, options: RunOptions, reporter: Reporter, *, done: frozenset[str] = frozenset(),
             captures: Mapping[str, Any] | None = None, now: datetime | None = None,
             in_doubt: Mapping[str, str] | None = None,
             facts: Mapping[str, list[Mapping[str, Any]]] | None = None) -> P.Plan:  # fmt: skip
    """Plan a run (journaled as a dry-run); `done`/`captures`/`in_doubt`/`facts` come from a journal when
    planning a resume (`in_doubt`: step id -> check | rerun | skip | refuse, see `resume.in_doubt_action`)."""
    if options.window is not None:
        window.parse_window(options.window)  # bad input: exit 2 before anything is journaled
    runbook = load_runbook(path, options.overrides)
    secrets = read_secrets(runbook)
    session, lock = open_new_run(runbook, options, reporter, "dry-run", secrets)
    try:
        session.captures.update(captures or {})
        for kind, values in (facts or {}).items():
            for value in values:
                session.add_facts({kind: value})
        r = _Rehearsal(session, options, done)
        r.history = past_durations(options.state_dir, str(runbook.path))
        hosts = r.check_hosts()
        steps = [
            r.plan_in_doubt(step, in_doubt[step.id])
            if in_doubt and step.id in in_doubt
            else r.plan_step(step)
            for step in runbook.steps
        ]
        ok = P.is_ok(steps, hosts)
        forecast = P.forecast_s(steps)
        message = "nothing blocks" if ok else "a probe failed or a host is unreachable"
        verdict = None
        if options.window is not None:
            verdict = window.check_window(options.window, forecast, now=now or datetime.now().astimezone(),
                                          untimed_steps=P.untimed(steps))  # fmt: skip
            ok = ok and verdict.fits
            message += "" if verdict.fits else f"; {verdict.message}"
        session.journal.append("run_finished", state="succeeded" if ok else "failed", exit_code=0 if ok else 1,
                               message=message, forecast_s=forecast, window=verdict)  # fmt: skip
        return P.Plan(session.run_id, str(runbook.path), runbook.name, "dry-run", ok, steps, hosts, forecast,
                      offline=options.offline, window=verdict)  # fmt: skip
    finally:
        session.close()
        lock.release()


class _Rehearsal:
    def __init__(self, session: Session, options: RunOptions, done: frozenset[str]) -> None:
        self.s = session
        self.o = options
        self.done = done
        self.runner = Runner(session, options)
        self.host_ok: dict[str, bool] = {}
        self.history: dict[str, float] = {}
        self.started = datetime.now(UTC)
        self.elapsed_s = 0.0  # the simulated clock: predicted waits of the would-run steps so far

    @property
    def unknown(self) -> set[str]:
        """Captured names whose value only a real run produces."""
        return set(self.s.runbook.captures) - set(self.s.captures)

    def _static_hosts(self, step: Step) -> tuple[str, ...]:
        try:
            return self.runner.hosts_of(step, self.display_ctx(step))
        except TemplateProblem:
            return ()

    def check_hosts(self) -> list[P.HostCheck]:
        """Connect and authenticate to every host a step would use (nothing runs there)."""
        used: list[str] = []
        for step in self.s.runbook.steps:
            for h in self._static_hosts(step):
                if h not in used and h not in (LOCAL, "localhost"):
                    used.append(h)
        out = []
        for name in used:
            spec = self.s.host_spec(name)
            address = f"{spec.address}:{spec.port}" if spec else LOCAL
            if self.o.offline:
                out.append(P.HostCheck(name, address, True, "not checked (--offline)"))
                continue
            try:
                self.s.transport(name).check_reachable()
                out.append(P.HostCheck(name, address, True))
                self.host_ok[name] = True
            except TransportError as exc:
                out.append(P.HostCheck(name, address, False, exc.problem))
                self.host_ok[name] = False
        return out

    def display_ctx(self, step: Step) -> dict[str, Any]:
        # Shown as is (`<name>`), not quoted like a value.
        placeholders = {n: Raw(f"<{n}>") for n in self.unknown}
        ctx = step_context(
            step, self.s.base, self.s.display_view, {**placeholders, **self.s.captures}
        )
        if self.s.runbook.groups:  # per-host values (inventory_hostname, host vars) as <name>
            each = fleet_hosts.host_context(self.s.runbook, fleet_hosts.EVERY_HOST, {})
            ctx.update({k: Raw(v) if isinstance(v, str) else v for k, v in each.items()})
        return ctx

    def plan_step(self, step: Step, *, record: bool = True) -> P.PlanStep:
        hosts: tuple[str, ...] = ()
        command: str | None = None
        reason = ""
        facts = P.StepFacts(done=step.id in self.done, is_gate=bool(step.gate or step.manual),
                            is_probe=step.kind is Kind.PROBE and bool(step.run or step.uses))  # fmt: skip
        duration: float | None = None
        predicted = step.wait_s
        try:
            view = self.display_ctx(step)
            hosts = self.runner.hosts_of(step, view)
            command = self.runner.display_command(step, view)
            facts = _replace(facts, host_ok=all(self.host_ok.get(h, True) for h in hosts))
            facts = _replace(facts, when=self._when(step), needs_runtime=self._needs_runtime(step))
        except TemplateProblem as exc:
            facts, reason = _replace(facts, needs_runtime=True), str(exc)
        status = P.step_status(facts)
        if status == P.WOULD_RUN and facts.is_probe and not self.o.offline:
            started = time.monotonic()
            ok, reason, predicted_probe = self.execute_probe(step, hosts, command)
            duration = round(time.monotonic() - started, 3)
            predicted = predicted_probe if predicted_probe is not None else predicted
            status = P.step_status(_replace(facts, probe_ok=ok))
        elif status == P.WOULD_RUN and step.uses and not self.o.offline:
            ok, reason, predicted_action = self.rehearse_action(step, None)
            predicted = predicted_action if predicted_action is not None else predicted
            status = P.step_status(_replace(facts, rehearsal_ok=ok))
        elif not facts.host_ok:
            down = [h for h in hosts if not self.host_ok.get(h, True)]
            reason = f"{', '.join(down)} unreachable (see the host lines below)"
        reason = reason or _reason(status, step, self.unknown, self._prompt(step))
        past = self.history.get(step.id) if status in (P.WOULD_RUN, P.GATE, P.UNKNOWN) else None
        if status not in (P.DONE, P.SKIP):  # the forecast's own measure of the step (forecast_s)
            self.elapsed_s += max(predicted or 0.0, duration or 0.0, past or 0.0)
        planned = P.PlanStep(step.id, status, str(step.kind), step.name, step.owner, list(hosts), command,
                             self.s.masker.text(reason), duration, predicted, past_duration_s=past)  # fmt: skip
        if record:
            self.record(planned)
        return planned

    def plan_in_doubt(self, step: Step, action: str) -> P.PlanStep:
        """A step cut off mid-run: what the resume would do with it, never a silent `would_run`."""
        planned = self.plan_step(step, record=False)
        status, blocks = planned.status, False
        if action == "skip":
            status, reason = P.DONE, "in doubt; counted as done (--skip-in-doubt)"
        elif action == "rerun":
            why = "idempotent: true" if step.idempotent else "--rerun-in-doubt"
            reason = f"in doubt; runs again ({why})"
        elif action == "check" and self.o.offline:
            status, reason = (
                P.UNKNOWN,
                "in doubt; its check: decides at resume (not run: --offline)",
            )
        elif action == "check":
            try:
                passed, why = self.runner.check_passes(step)
            except TransportError as exc:
                passed, why, blocks = False, f"cannot run its check: {exc}", True
            status = P.DONE if passed else planned.status
            reason = f"in doubt; {why}"
        else:
            status, blocks = P.UNKNOWN, True
            reason = (
                "in doubt (cut off mid-run) and no check:; resume refuses until you pass "
                "--skip-in-doubt (it took effect) or --rerun-in-doubt (it did not)"
            )
        result = dataclasses.replace(planned, status=status, reason=reason, blocks=blocks)
        self.record(result)
        return result

    def record(self, planned: P.PlanStep) -> None:
        self.s.journal.append("step_planned", step=planned.id, status=planned.status, hosts=planned.hosts,
                              command=planned.command, reason=planned.reason, duration_s=planned.duration_s,
                              predicted_wait_s=planned.predicted_wait_s)  # fmt: skip
        self.s.reporter.step_end(
            planned.id, planned.status, planned.reason, planned.duration_s or 0.0
        )

    def _prompt(self, step: Step) -> str:
        """The gate's question as the operator will see it (secrets masked, unknown values as <name>)."""
        if step.gate is None:
            return ""
        try:
            return render(step.gate.prompt, self.display_ctx(step))
        except TemplateProblem:
            return step.gate.prompt

    def _needs_runtime(self, step: Step) -> bool:
        fields: list[Any] = [step.run, *step.on, *step.env.values(), *_strings(step.with_)]
        for layer in step.scope:
            fields.extend(_strings(layer))
        unknown = self.unknown
        return any(is_template(f) and names(f) & unknown for f in fields)

    def _when(self, step: Step) -> bool | None:
        if step.when is None:
            return True
        if isinstance(step.when, str) and expression_names(step.when) & self.unknown:
            return None
        return truth(step.when, step_context(step, self.s.base, self.s.secrets, self.s.captures))

    def execute_probe(
        self, step: Step, hosts: tuple[str, ...], command: str | None
    ) -> tuple[bool, str, float | None]:
        """Run a probe for real; its capture becomes known for the steps after it."""
        if step.uses and len(hosts) > 1:  # a fleet probe: its verdict on every host
            verdicts = {h: self.rehearse_action(step, h) for h in hosts}
            failed = [f"{h}: {reason}" for h, (ok, reason, _) in verdicts.items() if not ok]
            waits = [w for _, _, w in verdicts.values() if w is not None]
            if failed:
                return (
                    False,
                    f"{len(failed)} of {len(hosts)} hosts: " + "; ".join(failed),
                    max(waits, default=None),
                )
            return (
                True,
                f"all {len(hosts)} hosts: {verdicts[hosts[0]][1]}",
                max(waits, default=None),
            )
        if step.uses:
            ok, reason, predicted = self.rehearse_action(step, hosts[0] if hosts else None)
            return ok, reason, predicted
        self.s.reporter.step_begin(step.id, step.title, hosts, command)
        ctx = step_context(step, self.s.base, self.s.secrets, self.s.captures)
        try:
            attempt, _ = self.runner.on_hosts(
                step, hosts, lambda host, n: self.runner.command(step, ctx, host, command, n)
            )
        except TransportError as exc:
            return False, str(exc), None
        if attempt.ok and step.capture:
            self.s.captures[step.capture] = attempt.stdout.strip()
        return attempt.ok, attempt.summary, None

    def rehearse_action(self, step: Step, host: str | None) -> tuple[bool, str, float | None]:
        ctx = step_context(step, self.s.base, self.s.secrets, self.s.captures)
        # shell commands (stop_old) see each secret as a reference, as in the run
        shell_ctx = step_context(step, self.s.base, self.s.shell_view, self.s.captures)
        if self.s.runbook.groups:  # the host's own values (inventory_hostname, host vars)
            ctx.update(fleet_hosts.host_context(self.s.runbook, host, {}))
            shell_ctx.update(fleet_hosts.host_context(self.s.runbook, host, {}))
        try:
            action = actions.load(step.uses or "").from_params(
                actions.Params(render_with(step.uses, step.with_, ctx, shell_ctx))
            )
            at = self.started + timedelta(seconds=self.elapsed_s)
            result = action.rehearse(
                _SimulatedContext(self.s, step.id, host, at=at, timeout_s=step.timeout_s)
            )
        except (OpskitError, ImportError, TemplateProblem) as exc:
            return False, self.s.masker.text(str(exc)), None
        except Exception as exc:  # noqa: BLE001 - a faulty action fails its row of the plan, not the plan
            return False, f"{step.uses} crashed: {type(exc).__name__}: {exc}", None
        for line in (result.detail or "").splitlines():
            self.s.emit(step.id, host or LOCAL, "stdout", line)
        if result.ok and step.capture and step.kind is Kind.PROBE:
            self.s.captures[step.capture] = dict(result.values)
        self.s.add_facts(result.facts)
        return result.ok, result.summary, result.predicted_wait_s


class _SimulatedContext(StepContext):
    """A dry-run step's context whose clock says when the step would start in the real run."""

    def __init__(self, session: Session, step_id: str, host: str | None, *, at: datetime,
                 timeout_s: float | None) -> None:  # fmt: skip
        super().__init__(session, step_id, host, dry_run=True, timeout_s=timeout_s)
        self._at = at

    def now(self) -> datetime:
        return self._at


def _strings(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [value]


def _replace(facts: P.StepFacts, **changes: Any) -> P.StepFacts:
    return dataclasses.replace(facts, **changes)


def _reason(status: str, step: Step, unknown: set[str], prompt: str) -> str:  # noqa: PLR0911 - one per status
    if status == P.SKIP:
        return "when: is false"
    if status == P.UNKNOWN:
        return "depends on a value only the run produces (" + ", ".join(sorted(unknown)) + ")"
    if status == P.GATE:
        level = step.gate.level if step.gate else "confirm"
        who = f" ({step.owner})" if step.owner and step.manual else ""
        if step.manual:
            return f"manual step{who}: someone must act and confirm"
        return f"{level} gate: {prompt}" if prompt else f"{level} gate"
    if status == P.DONE:
        return "done (journal)"
    if step.wait_s is not None:
        return f"waits {format_seconds(step.wait_s)}"
    if status == P.WOULD_RUN and step.kind is Kind.PROBE:
        return "probe not executed (--offline)"
    return ""
