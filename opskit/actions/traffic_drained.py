"""`uses: traffic.drained`: wait until the old host is safe to shut down (a long probe with progress).

A dry-run reads the counters once and reports the verdict and the predicted wait. The switch time and
the old TTL come from `with:` or from facts journaled earlier in the run: `dns.switched` (when the
address changed, and the TTL it had) and `dns.ttl_lowered` (a lowering still in flight extends how long
caches may hold the old address). With `on: HOST` the stats file is read over the step's SSH connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

from opskit import timeparse
from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params
from opskit.actions.samples import record_verdict
from opskit.durations import format_seconds
from opskit.errors import OpskitError
from opskit.traffic.verdict import DEFAULT_QUIET_S

SWITCH_FACT = "dns.switched"
LOWERED_FACT = "dns.ttl_lowered"


def _when(value: Any, now: datetime | None = None) -> datetime | None:
    """A moment from `with:` or a journaled fact, read by opskit.timeparse (the CLI's one parser)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        return timeparse.parse(value, now=now or datetime.now(UTC)).at
    except timeparse.TimeError:
        return None


def check_switched_at(value: str | None) -> None:
    """ParamError unless `switched_at` is empty, a template, or a time opskit.timeparse reads."""
    if value and "{{" not in value:
        try:
            timeparse.parse(value, now=datetime.now(UTC))
        except timeparse.TimeError as exc:
            raise ParamError("switched_at", str(exc)) from None


def _first(fact: Mapping[str, Any], *keys: str) -> Any:
    return next((fact[k] for k in keys if fact.get(k) is not None), None)


def switch_from_facts(
    facts: list[Mapping[str, Any]], lowered: list[Mapping[str, Any]]
) -> tuple[datetime | None, float | None]:
    """(switched_at, old_ttl_s) from journaled facts, the latest of each kind; None when unknown.

    A TTL lowering whose old TTL had not yet run out at the switch keeps caches longer than the
    lowered TTL: then old_ttl becomes (lowered_at + previous TTL) - switched_at.
    """
    switched_at: datetime | None = None
    old_ttl: float | None = None
    if facts:
        last = facts[-1]
        switched_at = _when(_first(last, "switched_at", "changed_at", "at"))
        ttl = _first(last, "old_ttl", "previous_ttl", "ttl")
        old_ttl = float(ttl) if isinstance(ttl, int | float) else None
    if lowered:
        last_lowering = lowered[-1]
        new_ttl = last_lowering.get("new_ttl")
        if old_ttl is None and isinstance(new_ttl, int | float):
            old_ttl = float(new_ttl)
        at, previous = _when(last_lowering.get("lowered_at")), last_lowering.get("previous_ttl")
        if switched_at and old_ttl is not None and at and isinstance(previous, int | float):
            still_cached = (at + timedelta(seconds=float(previous)) - switched_at).total_seconds()
            old_ttl = max(old_ttl, still_cached)
    return switched_at, old_ttl


@dataclass(frozen=True)
class TrafficDrained(BaseAction):
    """with: stats_file (or haproxy_socket), switched_at, old_ttl, margin, quiet, max_active,
    allow_clients, timeout, interval. `haproxy_socket` reads a HAProxy bridge started by proxy.start with
    `engine: haproxy` on a host (its `values.haproxy_socket`)."""

    kind: ClassVar[ActionKind] = ActionKind.PROBE
    stats_file: str | None = None
    haproxy_socket: str | None = None
    switched_at: str | None = None
    old_ttl_s: float | None = None
    margin_s: float | None = None
    quiet_s: float = DEFAULT_QUIET_S
    max_active: int = 0
    allow_clients: tuple[str, ...] = ()
    timeout_s: float = 3600.0
    interval_s: float = 5.0

    @classmethod
    def from_params(cls, params: Params) -> Self:
        action = cls(
            stats_file=params.text("stats_file", None),
            haproxy_socket=params.text("haproxy_socket", None),
            switched_at=params.text("switched_at", None),
            old_ttl_s=params.seconds("old_ttl", None),
            margin_s=params.seconds("margin", None),
            quiet_s=params.seconds("quiet", DEFAULT_QUIET_S),
            max_active=params.integer("max_active", 0),
            allow_clients=tuple(params.text_list("allow_clients", [])),
            timeout_s=params.seconds("timeout", 3600.0),
            interval_s=params.seconds("interval", 5.0),
        )
        params.finish()
        if (action.stats_file is None) == (action.haproxy_socket is None):
            raise ParamError("stats_file", "give exactly one of stats_file or haproxy_socket")
        check_switched_at(action.switched_at)
        if action.max_active < 0:
            raise ParamError("max_active", "cannot be negative")
        if action.allow_clients and action.max_active == 0:
            raise ParamError("allow_clients", "needs max_active (how many connections may remain)")
        if action.interval_s <= 0:
            raise ParamError("interval", "must be more than 0")
        if action.quiet_s > action.timeout_s:  # it could never say SAFE before giving up
            raise ParamError(
                "quiet",
                f"the quiet window {format_seconds(action.quiet_s)} is longer than timeout "
                f"{format_seconds(action.timeout_s)}: raise timeout or shorten quiet",
            )
        return action

    def describe(self) -> str:
        return (
            f"wait until the bridge of {self.stats_file or self.haproxy_socket} has drained "
            f"(quiet {format_seconds(self.quiet_s)}, up to {format_seconds(self.timeout_s)})"
        )

    def longest_wait_s(self) -> float | None:
        return self.timeout_s

    def _policy(self, ctx: ActionContext) -> Any:
        from opskit.traffic.verdict import DrainPolicy  # noqa: PLC0415

        from_facts = switch_from_facts(ctx.facts(SWITCH_FACT), ctx.facts(LOWERED_FACT))
        return DrainPolicy(
            switched_at=_when(self.switched_at, ctx.now()) or from_facts[0],
            old_ttl_s=self.old_ttl_s if self.old_ttl_s is not None else from_facts[1],
            margin_s=self.margin_s,
            quiet_s=self.quiet_s,
            max_active=self.max_active,
            allow_clients=self.allow_clients,
        )

    def _source(self, ctx: ActionContext) -> Any:
        from opskit.traffic import source  # noqa: PLC0415

        if self.haproxy_socket is not None:
            if ctx.host is None:
                return source.HaproxySocketSource(Path(self.haproxy_socket).expanduser())
            return source.RemoteHaproxySource(ctx.transport(), self.haproxy_socket)
        assert self.stats_file is not None  # noqa: S101 - from_params requires one of the two
        if ctx.host is None:
            return source.FileSource(Path(self.stats_file).expanduser())
        return source.RemoteFileSource(ctx.transport(), self.stats_file)

    def _result(self, outcome: Any, *, rehearsal: bool = False) -> ActionResult:
        from opskit.traffic.verdict import clock  # noqa: PLC0415

        verdict = outcome.verdict
        reasons = "\n".join(
            [f"- {r}" for r in verdict.reasons]
            + [f"- note: {n}" for n in verdict.not_watched if n not in verdict.reasons]
            + [
                f"- not watched (not quiet): {g.start:%H:%M:%S} to {g.end:%H:%M:%S} UTC"
                for g in verdict.gaps[-3:]
            ]
        )
        cut = (
            f"\na shutdown now would cut: {', '.join(verdict.would_cut)}"
            if verdict.would_cut
            else ""
        )
        if verdict.safe:
            summary = f"SAFE to shut down: {verdict.active} active, quiet for {format_seconds(verdict.quiet_for_s)}"
        elif rehearsal:
            when = (
                clock(verdict.earliest_safe_at, verdict.checked_at)
                if verdict.earliest_safe_at
                else "unknown"
            )
            summary = f"not safe yet (no earlier than {when}): {verdict.reasons[0]}"
        elif outcome.cancelled:
            summary = f"stopped before the bridge drained: {verdict.reasons[0]}"
        else:
            summary = f"NOT SAFE after {format_seconds(outcome.waited_s)}: {verdict.reasons[0]}"
        values = {
            "safe": verdict.safe,
            "active": verdict.active,
            "last_activity": verdict.last_activity.isoformat() if verdict.last_activity else None,
            "earliest_safe_at": verdict.earliest_safe_at.isoformat()
            if verdict.earliest_safe_at
            else None,
            "would_cut": list(verdict.would_cut),
            "clients": len(verdict.clients),
            "not_watched": list(verdict.not_watched),
            "gaps": [
                {"start": g.start.isoformat(), "end": g.end.isoformat()} for g in verdict.gaps
            ],
        }
        return ActionResult(
            ok=verdict.safe or rehearsal,
            summary=summary,
            detail=reasons + cut,
            values=values,
            predicted_wait_s=verdict.wait_s if rehearsal else None,
        )

    def run(self, ctx: ActionContext) -> ActionResult:
        from opskit.traffic.wait import wait_until_safe  # noqa: PLC0415

        policy = self._policy(ctx)

        def progress(verdict: Any, elapsed_s: float) -> None:
            record_verdict(ctx.run_dir, verdict)  # the report's chart, in every run with a bridge
            fraction = min(1.0, elapsed_s / self.timeout_s) if self.timeout_s else None
            ctx.progress(
                f"{verdict.active} active, quiet {format_seconds(verdict.quiet_for_s)}: {verdict.reasons[0]}",
                fraction,
            )

        try:
            outcome = wait_until_safe(
                self._source(ctx),
                policy,
                timeout_s=self.timeout_s,
                interval_s=self.interval_s,
                on_progress=progress,
                cancelled=ctx.cancelled,
                now=ctx.now,
            )
        except OpskitError as exc:
            return ActionResult(ok=False, blocked=True, summary=str(exc))
        return self._result(outcome)

    def rehearse(self, ctx: ActionContext) -> ActionResult:
        """Report the current verdict and how long the real wait is predicted to take; never waits."""
        from opskit.traffic.wait import check  # noqa: PLC0415

        policy = self._policy(ctx)
        try:
            outcome = check(self._source(ctx), policy, now=ctx.now())
        except OpskitError as exc:
            # In a dry-run the bridge is usually not started yet (proxy.start only says what it would
            # do): predict the least the real wait takes instead of blocking the whole plan.
            forget_at = policy.caches_forget_at
            least = max(
                policy.quiet_s,
                (forget_at - ctx.now()).total_seconds() if forget_at is not None else 0.0,
            )
            return ActionResult(
                ok=True,
                summary=f"no counters yet ({exc}); the real wait takes at least {format_seconds(least)}",
                predicted_wait_s=least,
            )
        return self._result(outcome, rehearsal=True)
