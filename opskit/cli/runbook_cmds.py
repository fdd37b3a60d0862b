"""`opskit validate|plan|run|resume|status|note|rollback`: thin faces over `opskit.runbook`."""

from __future__ import annotations

import functools
import getpass
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from opskit.cli import output
from opskit.cli.fleet_options import fleet_options, host_lines
from opskit.cli.runbook_view import ConsoleReporter, render_plan, status_by_owner
from opskit.display import display_value
from opskit.durations import format_seconds
from opskit.errors import ExitCode, RunbookProblems, UsageError
from opskit.statedir import default_state_dir

F = TypeVar("F", bound=Callable[..., Any])

STATE_DIR_HELP = (
    "Where journals live (env OPSKIT_STATE_DIR; default $XDG_STATE_HOME/opskit, "
    "~/.local/state/opskit)."
)


def state_dir_option(fn: F) -> F:
    return click.option(
        "--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="OPSKIT_STATE_DIR",
        default=lambda: str(default_state_dir()), help=STATE_DIR_HELP,
    )(fn)  # fmt: skip


def operator_option(fn: F) -> F:
    return click.option(
        "--operator", envvar="OPSKIT_OPERATOR", default=None,
        help="Your name in the journal (env OPSKIT_OPERATOR; default: your login).",
    )(fn)  # fmt: skip


def vars_options(fn: F) -> F:
    fn = click.option("--vars-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                      help="A YAML mapping of variables.")(fn)  # fmt: skip
    return click.option(
        "--var", "var", multiple=True, metavar="K=V", help="Set a variable (repeatable)."
    )(fn)


def window_option(fn: F) -> F:
    return click.option(
        "--window", metavar="HH:MM-HH:MM", default=None,
        help="Maintenance window (local time): say whether the forecast fits its next occurrence; "
        "exit 1 when it does not.",
    )(fn)  # fmt: skip


def gate_options(fn: F) -> F:
    fn = click.option("--approve", multiple=True, metavar="STEP_ID",
                      help="Approve this step's gate in advance (repeatable; passes critical gates).")(fn)  # fmt: skip
    fn = click.option(
        "--yes", is_flag=True, help="Answer yes to confirm and typed gates (never critical)."
    )(fn)
    return click.option("--accept-new-host-keys", is_flag=True,
                        help="Record unknown SSH host keys in known_hosts (a changed key is still refused).")(fn)  # fmt: skip


def include_option(fn: F) -> F:
    """`--allow-include-outside`: the operator trusts includes outside the runbook's folders (issue #10)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, allow_include_outside: bool = False, **kwargs: Any) -> Any:
        from opskit.runbook.loader import ALLOW_INCLUDE_OUTSIDE  # noqa: PLC0415 - imported on first use

        token = ALLOW_INCLUDE_OUTSIDE.set(allow_include_outside)
        try:
            return fn(*args, **kwargs)
        finally:
            ALLOW_INCLUDE_OUTSIDE.reset(token)

    return click.option(
        "--allow-include-outside", is_flag=True,
        help="Allow include: of files outside the runbook's folder and its playbooks folder.",
    )(wrapper)  # type: ignore[return-value]  # fmt: skip


def concurrency_option(fn: F) -> F:
    return click.option(
        "--allow-concurrent", is_flag=True,
        help="Run even while another run of the same runbook is live (refused by default).",
    )(fn)  # fmt: skip


def reports_problems(fn: F) -> F:
    """An invalid runbook: one `FILE:LINE:COL: message` line per problem on stderr, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RunbookProblems as exc:
            for problem in exc.problems:
                output.line(str(problem), err=True)
            count = len(exc.problems)
            output.line(
                f"opskit: {count} problem{'s' if count != 1 else ''}; nothing ran", err=True
            )
            return ExitCode.BAD_INPUT

    return wrapper  # type: ignore[return-value]


def _operator(name: str | None) -> str:
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def _overrides(var: tuple[str, ...], vars_file: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if vars_file is not None:
        import yaml  # noqa: PLC0415 - imported on first use, keeps start-up fast

        try:
            loaded = yaml.safe_load(vars_file.read_text())
        except yaml.YAMLError as exc:
            raise UsageError(f"--vars-file {vars_file}: not YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--vars-file {vars_file}: expected a mapping of names to values")
        values.update({str(k): v for k, v in loaded.items()})
    for item in var:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--var {item!r}: expected NAME=VALUE")
        values[key.strip()] = value
    return values


def _set_values(items: tuple[str, ...]) -> dict[str, str]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected VAR=VALUE")
        values[key.strip()] = value
    return values


def _options(state_dir: Path, operator: str | None, **kw: Any) -> Any:
    from opskit.runbook.engine import RunOptions  # noqa: PLC0415 - imported on first use, keeps start-up fast

    approve = frozenset(kw.pop("approve", ()) or ())
    return RunOptions(state_dir=state_dir, operator=_operator(operator), approve=approve,
                      interactive=sys.stdin.isatty(), **kw)  # fmt: skip


def _interrupt_on_sigterm() -> None:
    """`kill PID` and a dropped terminal (SIGHUP) stop the current step like Ctrl-C: exit 130, resumable."""

    def handler(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            _forget_lost_terminal()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def _forget_lost_terminal() -> None:
    """After a hang-up, writing to the dead terminal fails (EIO): the journal is the record from here."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        if os.isatty(fd):
            os.dup2(devnull, fd)
    os.close(devnull)


@click.command()
@click.argument("runbook", type=click.Path(dir_okay=False, path_type=Path))
@vars_options
@fleet_options
@include_option
@reports_problems
def validate(runbook: Path, var: tuple[str, ...], vars_file: Path | None) -> ExitCode:
    """Check a runbook (or a playbook on its own) without running anything; one FILE:LINE:COL line per problem.

    A playbook (steps without a runbook name:) is checked with the names its includer passes in with:
    (its params:, or every name it uses and does not define). Exit 0 when valid, 2 with every problem
    listed on stderr.

    \b
    Example:
      opskit validate runbooks/night-cutover.yaml
      opskit validate playbooks/service-restart.yaml
    """
    from opskit.runbook.validate import validate_file  # noqa: PLC0415 - imported on first use, keeps start-up fast

    checked = validate_file(runbook, _overrides(var, vars_file))
    if checked.kind == "playbook":
        expects = ", ".join(checked.params) or "nothing"
        output.line(f"ok: {checked.path}: playbook, {checked.steps} steps; with: {expects}")
    else:
        output.line(f"ok: {checked.path}: {checked.steps} steps, {checked.hosts} hosts")
    # Issue #10: each place a command takes a value as shell text (`| raw`) instead of one argument.
    for place in checked.fragments:
        output.line(f"  shell text (| raw): {place}")
    return ExitCode.OK


def _plan(runbook: Path, options: Any, as_json: bool) -> ExitCode:
    from opskit.runbook.rehearsal import rehearse  # noqa: PLC0415 - imported on first use, keeps start-up fast

    reporter = ConsoleReporter(quiet_steps=True, err=as_json)
    plan = rehearse(runbook, options, reporter)
    return _show_plan(plan, f"opskit run {runbook}", as_json)


def _show_plan(plan: Any, next_command: str, as_json: bool) -> ExitCode:
    if as_json:
        output.emit_json(plan)
    else:
        render_plan(plan, next_command)
    return ExitCode.OK if plan.ok else ExitCode.NEGATIVE


@click.command()
@click.argument("runbook", type=click.Path(dir_okay=False, path_type=Path))
@vars_options
@click.option("--offline", is_flag=True, help="Execute nothing at all: no probes, no host checks.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the plan as JSON (keys: steps, hosts, forecast_s...).",
)
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="Record unknown SSH host keys while checking hosts.",
)
@window_option
@operator_option
@state_dir_option
@fleet_options
@include_option
@reports_problems
def plan(  # noqa: PLR0917 - click passes every option as an argument
         runbook: Path, var: tuple[str, ...], vars_file: Path | None, offline: bool, as_json: bool,
         accept_new_host_keys: bool, window: str | None, operator: str | None,
         state_dir: Path) -> ExitCode:  # fmt: skip
    """Rehearse a runbook: render every step, run probes for real, change nothing.

    Each step gets one status: would_run, probe_ok, probe_failed, skip, gate, unknown (needs a value only
    the run produces) or done. Every host is checked for reachability and login. The rehearsal is
    journaled as a dry-run. With --window, the forecast (waits, predicted waits, probes) is checked against
    the window's next occurrence (or what is left of it). Exit 0 when nothing blocks, 1 when a probe fails,
    a host is unreachable or the night does not fit the window.

    \b
    Example:
      opskit plan runbooks/night-cutover.yaml --var new=198.51.100.20
      opskit plan runbooks/night-cutover.yaml --window 02:00-05:00
      opskit plan runbooks/night-cutover.yaml --offline --json
    """
    options = _options(state_dir, operator, overrides=_overrides(var, vars_file), offline=offline,
                       accept_new_host_keys=accept_new_host_keys, window=window)  # fmt: skip
    return _plan(runbook, options, as_json)


def _outcome(outcome: Any) -> ExitCode:
    if outcome.state == "succeeded":
        output.line(f"succeeded: {outcome.message} (run {outcome.run_id})")
    else:
        output.line(f"{outcome.state.upper()}: {outcome.message} (run {outcome.run_id})")
        for i, advice in enumerate(outcome.next_steps or [outcome.resume_hint or ""]):
            output.line(("next: " if i == 0 else "      ") + advice)
    return ExitCode(outcome.exit_code)


@click.command()
@click.argument("runbook", type=click.Path(dir_okay=False, path_type=Path))
@vars_options
@gate_options
@click.option("--dry-run", is_flag=True, help="Rehearse instead (same as `opskit plan`).")
@click.option("--offline", is_flag=True, help="With --dry-run: execute nothing at all.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@concurrency_option
@window_option
@operator_option
@state_dir_option
@fleet_options
@include_option
@reports_problems
def run(  # noqa: PLR0917 - click passes every option as an argument
        runbook: Path, var: tuple[str, ...], vars_file: Path | None, approve: tuple[str, ...], yes: bool,
        accept_new_host_keys: bool, dry_run: bool, offline: bool, as_json: bool, allow_concurrent: bool,
        window: str | None, operator: str | None, state_dir: Path) -> ExitCode:  # fmt: skip
    """Run a runbook for real, journaled step by step; prints the run id first.

    Output streams live with the host as prefix. Gates ask at a terminal; without one they stop the run
    (exit 3) unless approved with --approve STEP_ID. Exit 0 success, 1 a step failed, 2 invalid runbook,
    3 stopped at a gate, 130 interrupted (the run can be resumed).

    \b
    Example:
      opskit run runbooks/night-cutover.yaml --operator alice
      opskit run runbooks/night-cutover.yaml --approve stop-old --approve go-dns
      opskit run runbooks/night-cutover.yaml --dry-run --window 02:00-05:00
    """
    overrides = _overrides(var, vars_file)
    if dry_run:
        options = _options(state_dir, operator, overrides=overrides, offline=offline,
                           accept_new_host_keys=accept_new_host_keys, window=window)  # fmt: skip
        return _plan(runbook, options, as_json)
    if offline or as_json or window:
        raise UsageError("--offline, --json and --window go with --dry-run (or use `opskit plan`)")
    from opskit.runbook import engine  # noqa: PLC0415 - imported on first use, keeps start-up fast

    options = _options(state_dir, operator, overrides=overrides, yes=yes, approve=approve,
                       accept_new_host_keys=accept_new_host_keys, allow_concurrent=allow_concurrent)  # fmt: skip
    _interrupt_on_sigterm()
    return _outcome(engine.run(runbook, options, ConsoleReporter(state_dir=state_dir)))


@click.command()
@click.argument("run_id")
@click.option(
    "--rerun-in-doubt", is_flag=True, help="Run a step that was in flight when the run died again."
)
@click.option(
    "--skip-in-doubt",
    is_flag=True,
    help="Count a step that was in flight as done without running it.",
)
@click.option(
    "--set", "set_values", multiple=True, metavar="VAR=VALUE",
    help="With --skip-in-doubt: the value a skipped capture: step would have captured.",
)  # fmt: skip
@click.option(
    "--accept-changes",
    is_flag=True,
    help="Resume even though the runbook changed since the run started.",
)
@click.option("--dry-run", is_flag=True, help="Plan the rest instead: finished steps show as done.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@concurrency_option
@window_option
@gate_options
@operator_option
@state_dir_option
@fleet_options
@include_option
@reports_problems
def resume(  # noqa: PLR0917 - click passes every option as an argument
           run_id: str, rerun_in_doubt: bool, skip_in_doubt: bool, set_values: tuple[str, ...],
           accept_changes: bool, dry_run: bool, as_json: bool, allow_concurrent: bool, window: str | None,
           approve: tuple[str, ...], yes: bool, accept_new_host_keys: bool, operator: str | None,
           state_dir: Path) -> ExitCode:  # fmt: skip
    """Continue a run after its last finished step; no finished step runs twice.

    A step that started but never finished is in doubt. One that changes nothing (a probe, a wait, a gate)
    runs again by itself; otherwise its check: decides; without one it runs again only when idempotent:
    true or with --rerun-in-doubt (or is skipped with --skip-in-doubt; a skipped capture: needs
    --set VAR=VALUE). Captured values come back from the journal. Refuses a changed runbook unless
    --accept-changes, and a step whose processes still run.

    \b
    Example:
      opskit resume 20251123-031002-a1b2 --operator bob
      opskit resume 20251123-031002-a1b2 --skip-in-doubt
      opskit resume 20251123-031002-a1b2 --dry-run
    """
    if rerun_in_doubt and skip_in_doubt:
        raise UsageError("choose one of --rerun-in-doubt and --skip-in-doubt")
    if dry_run:
        from opskit.runbook.resume import plan_resume  # noqa: PLC0415 - imported on first use

        options = _options(state_dir, operator, accept_changes=accept_changes, window=window,
                           rerun_in_doubt=rerun_in_doubt, skip_in_doubt=skip_in_doubt,
                           accept_new_host_keys=accept_new_host_keys)  # fmt: skip
        planned = plan_resume(run_id, options, ConsoleReporter(quiet_steps=True, err=as_json))
        flags = (
            " --rerun-in-doubt" if rerun_in_doubt else (" --skip-in-doubt" if skip_in_doubt else "")
        )
        return _show_plan(planned, f"opskit resume {run_id}{flags}", as_json)
    if window or as_json:
        raise UsageError("--window and --json go with --dry-run")
    from opskit.runbook.resume import resume as resume_run  # noqa: PLC0415 - imported on first use, keeps start-up fast

    options = _options(state_dir, operator, yes=yes, approve=approve, accept_new_host_keys=accept_new_host_keys,
                       rerun_in_doubt=rerun_in_doubt, skip_in_doubt=skip_in_doubt, accept_changes=accept_changes,
                       set_values=_set_values(set_values), allow_concurrent=allow_concurrent)  # fmt: skip
    _interrupt_on_sigterm()
    return _outcome(resume_run(run_id, options, ConsoleReporter(state_dir=state_dir)))


@click.command()
@click.argument("run_id", required=False)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON (keys: run_id, runbook, mode, state, steps, notes).",
)
@state_dir_option
def status(run_id: str | None, as_json: bool, state_dir: Path) -> ExitCode:
    """List runs, or show one run: every step's status, attempts, duration, approvals and the notes.

    \b
    Example:
      opskit status
      opskit status 20251123-031002-a1b2 --json
    """
    from opskit.runbook import replay  # noqa: PLC0415 - imported on first use, keeps start-up fast

    if run_id is None:
        runs = replay.list_runs(state_dir)
        if as_json:
            output.emit_json(runs)
        elif not runs:
            output.line(f"no runs in {state_dir}")
        else:
            rows = [(r.run_id, r.runbook_name, r.mode, r.state, f"{r.done}/{r.total}", r.operator, r.started_at)
                    for r in runs]  # fmt: skip
            output.table(("RUN", "RUNBOOK", "MODE", "STATE", "DONE", "OPERATOR", "STARTED"), rows)
        return ExitCode.OK
    state = replay.load_run(state_dir, run_id)
    for warning in state.warnings:
        output.line(f"warning: {warning}", err=True)
    if as_json:
        output.emit_json(state)
        return ExitCode.OK
    rolled = ", rolled back" if state.rolled_back else ""
    output.line(f"run {state.run_id}: {state.runbook_name} ({state.mode}, {state.state}{rolled})")
    output.line(
        f"runbook: {state.runbook}  operator: {state.operator}  started: {state.started_at}"
    )
    owners = any(s.owner for s in state.steps)
    rows = []
    for s in state.steps:
        duration = "" if s.duration_s is None else format_seconds(s.duration_s)
        captured = ", ".join(f"{k}={display_value(k, v)}" for k, v in s.captured.items())
        rows.append((s.id, s.status, *((s.owner or "",) if owners else ()), str(s.attempts),
                     duration, s.approved_by or "", captured))  # fmt: skip
    headers = ("STEP", "STATUS", *(("OWNER",) if owners else ()), "ATTEMPTS", "DURATION",
               "APPROVED BY", "CAPTURED")  # fmt: skip
    output.table(headers, rows)
    host_lines(state.steps)  # a fleet step: how each host stands
    if owners:
        output.line("by owner:")
        for owner, ids in status_by_owner(state.steps):
            output.line(f"  {owner}: {', '.join(ids)}")
    for note_ in state.notes:
        output.line(f"note {note_.ts} {note_.operator}: {note_.text}")
    if state.message:
        output.line(f"{state.state}: {state.message}")
    for i, advice in enumerate(state.next_steps):
        output.line(("next: " if i == 0 else "      ") + advice)
    return ExitCode.OK


@click.command()
@click.argument("run_id")
@click.argument("text")
@operator_option
@state_dir_option
def note(run_id: str, text: str, operator: str | None, state_dir: Path) -> ExitCode:
    """Add a hand-over note to a run's journal (shown by status and the report).

    \b
    Example:
      opskit note 20251123-031002-a1b2 "db synced, waiting for the client to switch DNS"
    """
    from opskit.runbook.context import run_masker  # noqa: PLC0415 - imported on first use, keeps start-up fast
    from opskit.runbook.journal import JOURNAL, Journal, run_dir  # noqa: PLC0415 - imported on first use, keeps start-up fast

    path = run_dir(state_dir, run_id) / JOURNAL
    journal = Journal(path, run_masker(path))  # a note is masked like output (issue #10)
    try:
        journal.append("note", text=text, operator=_operator(operator))
    finally:
        journal.close()
    output.line(f"noted on run {run_id}")
    return ExitCode.OK


@click.command()
@click.argument("run_id")
@click.option(
    "--dry-run", is_flag=True, help="Show what would be undone, in order and with which values."
)
@click.option(
    "--rerun-in-doubt",
    is_flag=True,
    help="Run again an undo that was cut off (its step has no check:).",
)
@click.option("--skip-in-doubt", is_flag=True, help="Count an undo that was cut off as done.")
@click.option(
    "--accept-changes",
    is_flag=True,
    help="Roll back even though the runbook changed since the run.",
)
@gate_options
@operator_option
@state_dir_option
@fleet_options
@include_option
@reports_problems
def rollback(  # noqa: PLR0917 - click passes every option as an argument
             run_id: str, dry_run: bool, rerun_in_doubt: bool, skip_in_doubt: bool, accept_changes: bool,
             approve: tuple[str, ...], yes: bool, accept_new_host_keys: bool, operator: str | None,
             state_dir: Path) -> ExitCode:  # fmt: skip
    """Undo a run's succeeded steps, newest first; stops at an irreversible step.

    Asks before it starts (at a terminal; otherwise --yes or --approve rollback). An undo that failed
    last time is tried again; one that was cut off is decided by its step's check: (or --rerun-in-doubt /
    --skip-in-doubt). Exit 0 when everything was undone, 1 when an undo failed, 3 when it stopped at the
    point of no return or a changing step without undo: stays in effect, 130 interrupted.

    \b
    Example:
      opskit rollback 20251123-031002-a1b2 --dry-run
      opskit rollback 20251123-031002-a1b2 --operator bob
    """
    from opskit.runbook.rollback import rollback as rollback_run  # noqa: PLC0415 - imported on first use, keeps start-up fast

    if rerun_in_doubt and skip_in_doubt:
        raise UsageError("choose one of --rerun-in-doubt and --skip-in-doubt")
    options = _options(state_dir, operator, accept_changes=accept_changes, approve=approve, yes=yes,
                       accept_new_host_keys=accept_new_host_keys, rerun_in_doubt=rerun_in_doubt,
                       skip_in_doubt=skip_in_doubt)  # fmt: skip
    if dry_run:
        outcome = rollback_run(run_id, options, ConsoleReporter(quiet_steps=True), dry_run=True)
        for r in outcome.steps:
            verb = {"would_undo": "undo", "nothing": "skip", "in_effect": "KEEP", "stopped": "STOP"}
            output.line(f"{verb.get(r.status, r.status)} {r.step}: {r.summary}")
        output.line(
            ("plan: " if outcome.exit_code == ExitCode.OK else "WARNING: ") + outcome.message
        )
        return ExitCode(outcome.exit_code)
    _interrupt_on_sigterm()
    outcome = rollback_run(run_id, options, ConsoleReporter())
    output.line(("done: " if outcome.exit_code == ExitCode.OK else "STOPPED: ") + outcome.message)
    return ExitCode(outcome.exit_code)
