"""One step rolled out across many hosts: at most `parallel` at once, batch after batch, stopping once
more hosts failed than `max_failures` allows, each host journaled (`host_started` fsynced before its
command starts, `host_finished` after it ends) so a resume runs only the hosts that did not finish.

A host whose start is journaled but not its finish is in doubt, by the same rules as a step: its
`check:` decides, else `idempotent: true` / `--rerun-in-doubt` re-run it, `--skip-in-doubt` skips it,
and otherwise the rollout refuses to touch it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opskit.errors import TransportDropped
from opskit.fleet import rollout
from opskit.runbook.journal import read_journal
from opskit.runbook.model import Step

if TYPE_CHECKING:
    from opskit.runbook.engine import Attempt, Runner

Once = Callable[[str | None, int], "Attempt"]


@dataclass
class HostRecord:
    """What the journal says of one host of one step."""

    status: str  # started | succeeded | failed | skipped
    summary: str = ""
    captured: Any = None
    undo: Mapping[str, Any] | None = None
    batch: int = 0


@dataclass
class FleetState:
    """Per-host records of every fleet step of a run, loaded once from the journal, kept up to date."""

    hosts: dict[str, dict[str, HostRecord]] = field(default_factory=dict)  # step -> host -> record
    captures: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # host -> capture name -> value
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, journal: Path) -> FleetState:
        state = cls()
        if journal.is_file():
            state.fold(read_journal(journal).events)
        return state

    def fold(self, events: Sequence[Mapping[str, Any]]) -> None:
        for ev in events:
            kind = ev.get("event")
            if kind == "host_started":
                self.hosts.setdefault(str(ev["step"]), {})[str(ev["host"])] = HostRecord(
                    "started", batch=int(ev.get("batch", 0))
                )
            elif kind == "host_finished":
                self.record(str(ev["step"]), str(ev["host"]), HostRecord(
                    str(ev.get("status")), str(ev.get("summary", "")), ev.get("captured"),
                    ev.get("undo"), int(ev.get("batch", 0))), ev.get("capture_name"))  # fmt: skip
            elif kind == "host_undone":
                self.hosts.get(str(ev["step"]), {}).pop(str(ev["host"]), None)

    def record(self, step: str, host: str, rec: HostRecord, capture_name: str | None) -> None:
        with self.lock:
            self.hosts.setdefault(step, {})[host] = rec
            if capture_name and rec.status == "succeeded":
                self.captures.setdefault(host, {})[str(capture_name)] = rec.captured

    def of(self, step: str) -> dict[str, HostRecord]:
        with self.lock:
            return dict(self.hosts.get(step, {}))


def undo_order(records: Mapping[str, HostRecord]) -> tuple[str, ...]:
    """The hosts a rollback undoes, last batch first and, within a batch, last finished first."""
    ran = [h for h, r in records.items() if r.status in ("succeeded", "failed", "started")]
    position = {h: i for i, h in enumerate(ran)}
    return tuple(sorted(ran, key=lambda h: (-records[h].batch, -position[h])))


def is_fleet(step: Step, hosts: Sequence[str]) -> bool:
    """Whether a step takes the fleet path (many hosts or rollout fields); one plain host keeps the old path."""
    return len(hosts) > 1 or bool(step.batches or step.parallel or step.max_failures)


@dataclass
class _Tally:
    total: int
    done: int = 0
    failed: int = 0
    running: dict[str, float] = field(default_factory=dict)  # host -> monotonic start

    def line(self) -> str:
        waiting = self.total - self.done - self.failed - len(self.running)
        text = f"{self.done} done, {len(self.running)} running, {self.failed} failed, {waiting} waiting"
        now = time.monotonic()
        slow = sorted(self.running.items(), key=lambda kv: kv[1])[:3]
        if slow:
            text += "; slowest: " + ", ".join(f"{h} {now - t:.1f}s" for h, t in slow)
        return text


def run_on_hosts(
    runner: Runner, step: Step, hosts: tuple[str, ...], once: Once
) -> tuple[Attempt, int]:
    """Roll `step` out across `hosts`; the Attempt says how the whole step went."""
    from opskit.runbook.engine import Attempt  # noqa: PLC0415 - the engine imports this module

    fleet = runner.fleet
    prior = fleet.of(step.id)
    todo: list[str] = []
    blocked: list[str] = []
    for host in hosts:
        rec = prior.get(host)
        if rec is not None and rec.status in ("succeeded", "skipped"):
            continue  # finished in an earlier process: never again
        if rec is not None and rec.status == "started":
            decision = _settle_in_doubt(runner, step, host)
            if decision == "refuse":
                blocked.append(host)
                continue
            if decision in ("done", "skip"):
                continue
        todo.append(host)
    if blocked:
        names = ", ".join(blocked)
        return Attempt(ok=False, blocked=True, summary=(
            f"in doubt on {names} (started, never finished) and no check:; verify by hand, then resume "
            "with --rerun-in-doubt or --skip-in-doubt")), 0  # fmt: skip
    allowed = rollout.allowed_failures(step.max_failures, len(hosts))
    already_failed = [h for h, r in prior.items() if r.status == "failed" and h not in todo]
    tally = _Tally(total=len(todo))
    results: dict[str, Attempt] = {}
    failed: list[str] = list(already_failed)
    stop = threading.Event()
    most = 0
    batches = rollout.batch_sizes(len(todo), step.batches)
    parallel = step.parallel or rollout.DEFAULT_PARALLEL
    position = 0
    for number, size in enumerate(batches, start=1):
        batch = todo[position : position + size]
        position += size
        most = max(
            most,
            _run_batch(
                runner, step, batch, number, once, parallel, tally, results, failed, stop, allowed
            ),
        )
        if len(failed) > allowed:
            break
    untouched = [h for h in todo if h not in results]
    succeeded = [h for h in hosts if h not in failed and h not in untouched]
    _table(runner, step, hosts, results, prior)
    per_host = {h: _captured(step, results[h]) for h in hosts if h in results and results[h].ok}
    # Per-host undo data (a bridge on each host), for a rollback host by host.
    undo = {h: dict(r.undo) for h, r in results.items() if r.undo is not None}
    undo.update({h: dict(r.undo) for h, r in prior.items() if r.undo is not None and h not in undo})
    values: dict[str, Any] = {"hosts": {h: ("failed" if h in failed else "untouched" if h in untouched else "succeeded")
                                        for h in hosts}}  # fmt: skip
    if len(failed) > allowed:
        rest = f"; untouched: {', '.join(untouched)}" if untouched else ""
        summary = (f"{len(failed)} of {len(hosts)} hosts failed ({', '.join(failed)}), more than max_failures "
                   f"allows ({allowed}): rollout stopped{rest}")  # fmt: skip
        worst = next((results[h] for h in failed if h in results), None)
        return Attempt(ok=False, summary=summary, rc=worst.rc if worst else None,
                       blocked=bool(worst and worst.blocked), values=values, per_host=per_host,
                       undo={"hosts": undo} if undo else None), most  # fmt: skip
    summary = f"{len(succeeded)} of {len(hosts)} hosts succeeded"
    if failed:
        summary += f"; failed within max_failures ({allowed}): {', '.join(failed)}"
    return Attempt(ok=True, summary=summary, values=values, per_host=per_host,
                   undo={"hosts": undo} if undo else None), most  # fmt: skip


def _run_batch(  # noqa: PLR0917 - the rollout's state, passed down once per batch
    runner: Runner, step: Step, batch: list[str], number: int, once: Once, parallel: int,
    tally: _Tally, results: dict[str, Attempt], failed: list[str], stop: threading.Event, allowed: int,
) -> int:  # fmt: skip
    """Run one batch, `parallel` hosts at a time; no host starts once too many have failed."""
    most = 0
    queue = list(batch)
    running: dict[Future[tuple[Attempt, int]], str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(batch)))) as pool:
        try:
            while queue or running:
                while queue and len(running) < parallel and len(failed) <= allowed:
                    host = queue.pop(0)
                    tally.running[host] = time.monotonic()
                    runner.journal.append("host_started", step=step.id, host=host, batch=number)
                    running[pool.submit(_one_host, runner, step, host, once)] = host
                if not running:
                    break
                finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    host = running.pop(future)
                    tally.running.pop(host, None)
                    result, attempts = future.result()
                    most = max(most, attempts)
                    results[host] = result
                    _journal_host(
                        runner, step, host, batch=number, result=result, attempts=attempts
                    )
                    if result.ok:
                        tally.done += 1
                    else:
                        tally.failed += 1
                        failed.append(host)
                runner.reporter.progress(
                    step.id, tally.line(), (tally.done + tally.failed) / max(tally.total, 1)
                )
        except BaseException:
            stop.set()  # Ctrl-C: hosts not started stay untouched; running ones finish or are cancelled
            runner.s.cancel.set()
            raise
    return most


def _one_host(runner: Runner, step: Step, host: str, once: Once) -> tuple[Attempt, int]:
    from opskit.runbook.engine import Attempt  # noqa: PLC0415 - the engine imports this module

    try:
        return runner.with_retry(step, host, once)
    except TransportDropped as exc:
        return Attempt(ok=False, summary=f"{exc} (in doubt on {host})", in_doubt=True), 1
    except Exception as exc:  # noqa: BLE001 - one host's crash fails that host, not the rollout's bookkeeping
        return Attempt(ok=False, summary=f"{type(exc).__name__}: {exc}"), 1


def _journal_host(
    runner: Runner, step: Step, host: str, *, batch: int, result: Attempt, attempts: int
) -> None:
    if result.in_doubt:
        return  # no host_finished: a resume treats the host as in doubt, as it should
    status = "succeeded" if result.ok else "failed"
    captured = _captured(step, result)
    runner.journal.append(
        "host_finished", step=step.id, host=host, batch=batch, status=status, rc=result.rc, attempts=attempts,
        summary=result.summary, capture_name=step.capture, captured=captured if step.capture else None,
        undo=None if result.undo is None else dict(result.undo),
    )  # fmt: skip
    runner.fleet.record(step.id, host, HostRecord(status, result.summary, captured, result.undo, batch),
                        step.capture)  # fmt: skip


def _captured(step: Step, result: Attempt) -> Any:
    """What `capture:` keeps of one host: a command's stdout, an action's values."""
    return result.stdout.strip() if step.run else dict(result.values)


def _settle_in_doubt(runner: Runner, step: Step, host: str) -> str:
    """done | rerun | skip | refuse for a host that started and never finished."""
    from opskit.runbook.resume import in_doubt_action  # noqa: PLC0415 - resume imports the engine

    action = in_doubt_action(step, rerun=runner.o.rerun_in_doubt, skip=runner.o.skip_in_doubt)
    if action == "check":
        passed, why = runner.check_passes(step, hosts=(host,))
        runner.journal.append("in_doubt", step=step.id, host=host, decision="done" if passed else "rerun",
                              reason=why, operator=runner.o.operator)  # fmt: skip
        if passed:
            runner.journal.append(
                "host_finished", step=step.id, host=host, status="succeeded", summary=why
            )
            runner.fleet.record(step.id, host, HostRecord("succeeded", why), None)
            return "done"
        return "rerun"
    if action == "skip":
        runner.journal.append("host_finished", step=step.id, host=host, status="skipped",
                              summary="in doubt; skipped by the operator (--skip-in-doubt)")  # fmt: skip
        runner.fleet.record(step.id, host, HostRecord("skipped"), None)
        return "skip"
    if action == "rerun":
        runner.journal.append("in_doubt", step=step.id, host=host, decision="rerun", operator=runner.o.operator,
                              reason="idempotent: true" if step.idempotent else "--rerun-in-doubt")  # fmt: skip
    return action


def _table(runner: Runner, step: Step, hosts: Sequence[str], results: Mapping[str, Attempt],
           prior: Mapping[str, HostRecord]) -> None:  # fmt: skip
    """The per-host table at the end of a fleet step, as output lines (shown and journaled)."""
    width = max((len(h) for h in hosts), default=4)
    for host in hosts:
        if host in results:
            r = results[host]
            status = "succeeded" if r.ok else "failed"
            summary = r.summary
        elif host in prior and prior[host].status != "started":
            status, summary = prior[host].status, "earlier: " + prior[host].summary
        else:
            status, summary = "untouched", "not started (rollout stopped)"
        runner.s.emit(step.id, "fleet", "stdout", f"{host:<{width}}  {status:<9}  {summary}")
