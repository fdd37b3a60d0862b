"""How `opskit run|plan|status` look: live step banners, the plan table, owners, what to do next."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import click

from opskit.cli import output
from opskit.durations import format_seconds
from opskit.errors import UsageError

# Off a terminal (a log, `nohup`, CI) a step that prints nothing for this long says it is still running,
# so a 40-minute copy or a wait between rare readings never looks like a hang.
HEARTBEAT_S = 60.0
# The plan is read in a terminal, pasted into tickets and printed: it fits 120 columns.
PLAN_WIDTH = 120


def _step_order(state_dir: Path, run_id: str) -> list[str]:
    """The run's step ids as journaled in `run_started` (for the [3/7] position in step banners)."""
    from opskit.runbook.replay import load_events  # noqa: PLC0415 - imported on first use, keeps start-up fast

    try:
        events = load_events(state_dir, run_id).events
    except UsageError:
        return []
    start = next((e for e in events if e.get("event") == "run_started"), {})
    return [str(info.get("id")) for info in start.get("steps", [])]


class ConsoleReporter:
    """Live output: step banners, `[host] line`, progress; prompts at a terminal."""

    def __init__(
        self,
        *,
        quiet_steps: bool = False,
        err: bool = False,
        state_dir: Path | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.quiet_steps = quiet_steps
        self.err = err
        self.tty = output.is_terminal() and not err
        self.state_dir = state_dir
        self._last_progress = 0.0
        self._order: list[str] = []
        quiet_terminal = output.is_terminal()  # a terminal shows live progress instead
        self._heartbeat = None if quiet_terminal else Heartbeat(heartbeat_s, self._still_running)
        self._step: tuple[str, float] | None = None

    def started(self, run_id: str, mode: str) -> None:
        if mode == "dry-run":
            return
        suffix = {"run": "", "resume": " (resumed)", "rollback": " (rollback)"}.get(mode, "")
        output.line(f"run id: {run_id}{suffix}", err=self.err)
        if mode in ("run", "resume") and self.state_dir is not None:
            self._order = _step_order(self.state_dir, run_id)

    def step_begin(
        self, step_id: str, title: str, hosts: tuple[str, ...], command: str | None
    ) -> None:
        where = f" on {', '.join(hosts)}" if hosts else ""
        position = (
            f"[{self._order.index(step_id) + 1}/{len(self._order)}] "
            if step_id in self._order
            else ""
        )
        output.line(
            f"==> {position}{step_id}{where}" + (f": {title}" if title != step_id else ""),
            err=self.err,
        )
        if command:
            shown = command if command.startswith(("manual: ", "wait ")) else f"$ {command}"
            output.line(f"    {shown}", err=self.err)
        self._step = (step_id, time.monotonic())
        if self._heartbeat is not None:
            self._heartbeat.start()

    def _still_running(self) -> None:
        if self._step is not None:
            step_id, since = self._step
            elapsed = format_seconds(time.monotonic() - since)
            output.line(f"... {step_id} still running ({elapsed} so far)", err=self.err)

    def output(self, host: str, line: str) -> None:
        if self._heartbeat is not None:
            self._heartbeat.touch()
        output.line(f"[{host}] {line}", err=self.err)

    def progress(self, step_id: str, message: str, fraction: float | None) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last_progress < 5:
            return
        self._last_progress = now
        if self._heartbeat is not None:
            self._heartbeat.touch()
        pct = f" {fraction * 100:3.0f}%" if fraction is not None else ""
        text = f"... {step_id}{pct} {message}"
        if self.tty:
            click.echo("\r" + text.ljust(78), nl=False)
        else:
            output.line(text, err=self.err)

    def step_end(self, step_id: str, status: str, summary: str, duration_s: float) -> None:
        self._step = None
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self.quiet_steps:
            return
        if self.tty:
            click.echo("\r" + " " * 78 + "\r", nl=False)
        mark = {"succeeded": "ok", "skipped": "skip", "undone": "undone", "nothing": "--"}.get(
            status, status.upper()
        )
        tail = f": {summary}" if summary else ""
        output.line(f"<== {mark} {step_id} ({format_seconds(duration_s)}){tail}", err=self.err)

    def ask(self, question: str) -> str | None:
        try:
            return str(click.prompt(question, default="", show_default=False, err=True))
        except click.exceptions.Abort as exc:
            # click turns Ctrl-C into Abort too: that is an interruption (exit 130, resumable), not a no.
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            return None

    def warn(self, text: str) -> None:
        output.line(f"warning: {text}", err=True)


class Heartbeat:
    """Calls `beat` whenever `every_s` pass without a `touch()`, between `start()` and `stop()`."""

    def __init__(self, every_s: float, beat: Any) -> None:
        self.every_s = every_s
        self.beat = beat
        self._last = time.monotonic()
        self._stop: threading.Event | None = None

    def touch(self) -> None:
        self._last = time.monotonic()

    def start(self) -> None:
        self.stop()
        self.touch()
        stop = self._stop = threading.Event()
        threading.Thread(
            target=self._run, args=(stop,), name="opskit-heartbeat", daemon=True
        ).start()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(min(1.0, self.every_s)):  # ends with the step (stop), or the process
            if time.monotonic() - self._last >= self.every_s:
                self.touch()
                with contextlib.suppress(OSError, ValueError):  # output closed under us
                    self.beat()


def render_plan(plan: Any, next_command: str) -> None:
    from opskit.durations import format_seconds  # noqa: PLC0415 - imported on first use, keeps start-up fast

    _plan_table(plan)
    owners = any(s.owner for s in plan.steps)
    for h in plan.hosts:
        state = "ok" if h.ok else "UNREACHABLE"
        output.line(
            f"host {h.name} ({h.address}): {state}" + (f": {h.problem}" if h.problem else "")
        )
    if owners:
        output.line("who does what:")
        for owner, lines in _by_owner(plan.steps):
            output.wrapped_line(f"  {owner}: " + "; ".join(lines), PLAN_WIDTH)
    output.line(
        f"forecast: {format_seconds(plan.forecast_s)} "
        "(waits, predicted waits, probes, and step times of the last real run)"
    )
    if plan.window is not None:
        output.line(f"window: {plan.window.message}")
    counts: dict[str, int] = {}
    for s in plan.steps:
        counts[s.status] = counts.get(s.status, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    if plan.ok:
        verdict = "nothing blocks"
    elif plan.window is not None and not plan.window.fits and _nothing_else_blocks(plan):
        verdict = "BLOCKED: the night does not fit the window"
    else:
        verdict = "BLOCKED: a probe failed, a host is unreachable or a step would stop the run"
    output.line(f"plan {plan.run_id} (journaled as a dry-run): {summary}; {verdict}")
    gates = [s.id for s in plan.steps if s.status == "gate"]
    if plan.ok:
        approve = "".join(f" --approve {g}" for g in gates)
        ask = f" (gates ask at a terminal; without one: {next_command}{approve})" if gates else ""
        output.line(f"next: {next_command}{ask}")
    elif _nothing_else_blocks(plan):
        output.line(
            "next: start the night earlier, pass a longer --window, or shorten the waits listed above"
        )
    else:
        output.line("next: fix what the NOTE column and host lines say, then plan again")


def _plan_table(plan: Any) -> None:
    """One row a step; rows wider than the plan's width wrap their command and put the note below."""
    owners = any(s.owner for s in plan.steps)
    rows = [
        (s.id, s.status, *((s.owner or "",) if owners else ()), ", ".join(s.hosts) or "local",
         s.command or "", _note(s))
        for s in plan.steps
    ]  # fmt: skip
    headers = ("STEP", "STATUS", *(("OWNER",) if owners else ()), "HOST", "COMMAND", "NOTE")
    if rows and max(len("  ".join(str(c) for c in row)) for row in rows) > PLAN_WIDTH:
        # Too wide for one line a step: each note goes under its row, whole (it says what to fix).
        output.table(headers[:-1], [r[:-1] for r in rows], max_width=PLAN_WIDTH,
                     wrap_first="COMMAND", notes=[str(r[-1]) for r in rows])  # fmt: skip
    else:
        output.table(headers, rows)


def _note(step: Any) -> str:
    from opskit.durations import format_seconds  # noqa: PLC0415 - imported on first use, keeps start-up fast

    if step.past_duration_s is None:
        return str(step.reason)
    took = f"took {format_seconds(step.past_duration_s)} last run"
    return f"{step.reason}; {took}" if step.reason else took


def _nothing_else_blocks(plan: Any) -> bool:
    """Only the window says no: the steps and hosts alone would pass."""
    from opskit.runbook.plan import is_ok  # noqa: PLC0415 - imported on first use, keeps start-up fast

    return is_ok(plan.steps, plan.hosts)


def _by_owner(steps: Any) -> list[tuple[str, list[str]]]:
    """Steps grouped by owner, in run order; a manual step says who must act and what to confirm."""
    groups: dict[str, list[str]] = {}
    for s in steps:
        if not s.owner:
            continue
        text = s.id
        if s.command and s.command.startswith("manual: "):
            text = f"{s.id} (MUST ACT: {s.command.removeprefix('manual: ')}; then confirm {s.id})"
        groups.setdefault(s.owner, []).append(text)
    unowned = [s.id for s in steps if not s.owner]
    if unowned:
        groups["(no owner)"] = unowned
    return list(groups.items())


def status_by_owner(steps: Any) -> list[tuple[str, list[str]]]:
    """`id (status)` per owner in run order: who has done what, who still has to act."""
    groups: dict[str, list[str]] = {}
    for s in steps:
        groups.setdefault(s.owner or "(no owner)", []).append(f"{s.id} ({s.status})")
    return list(groups.items())
