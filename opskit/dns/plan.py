"""`dns plan`: the timeline of a planned switch, from the TTL published now.

- latest time to lower the TTL: switch_at - current TTL (plus however long your secondaries lag);
- earliest safe switch: the moment the lowered TTL is published + the old TTL;
- last moment a conforming cache can return the old answer: switch_at + the TTL at switch time + 1 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from opskit.dns.check import CheckOptions, check
from opskit.dns.history import latest_for
from opskit.dns.verdict import ASSUMED_MAX_CACHE_TTL_S, Lowering
from opskit.errors import Blocked


@dataclass(frozen=True)
class PlanStep:
    """One moment on the timeline."""

    at: datetime | None
    what: str


@dataclass(frozen=True)
class SwitchPlan:
    """When to lower, when the switch is safe, and when the last cache lets go of the old answer."""

    name: str
    type: str
    current_ttl: int
    target_ttl: int
    switch_at: datetime
    lower_by: datetime | None
    safe_from: datetime | None
    last_old_answer: datetime
    feasible: bool
    steps: tuple[PlanStep, ...]
    problems: tuple[str, ...]


def make_plan(
    *,
    name: str,
    rtype: str,
    current_ttl: int,
    target_ttl: int,
    switch_at: datetime,
    now: datetime,
    lowering: Lowering | None = None,
) -> SwitchPlan:
    """The timeline, pure: every time follows from the TTLs, the switch time and `now`."""
    what = f"{name.rstrip('.')} {rtype}"
    steps: list[PlanStep] = []
    problems: list[str] = []
    lower_by: datetime | None = None
    safe_from: datetime | None
    if current_ttl > target_ttl:
        lower_by = switch_at - timedelta(seconds=current_ttl)
        safe_from = max(now, lower_by) + timedelta(seconds=current_ttl)
        steps.append(
            PlanStep(
                lower_by,
                f"lower the TTL of {what} from {current_ttl} to {target_ttl} s at the latest",
            )
        )
        if lower_by < now:
            problems.append(
                f"too late to lower the TTL of {what} in time: lowered now, the switch is safe only from "
                f"{safe_from:%Y-%m-%d %H:%M:%S} UTC; move the switch or keep the old host answering until then"
            )
        ttl_at_switch = target_ttl
    else:
        ttl_at_switch = current_ttl
        if lowering is not None:
            safe_from = lowering.safe_after
            steps.append(
                PlanStep(
                    lowering.lowered_at, f"TTL of {what} lowered from {lowering.previous_ttl_s} s"
                )
            )
        else:
            safe_from = None
            problems.append(
                f"TTL of {what} is {current_ttl} s now; the switch is safe only if it was lowered at least "
                f"{ASSUMED_MAX_CACHE_TTL_S} s before it (give --lowered-at and --previous-ttl)"
            )
        if safe_from is not None and safe_from > switch_at:
            problems.append(
                f"the switch at {switch_at:%Y-%m-%d %H:%M:%S} UTC is before the old TTL has run out "
                f"({safe_from:%Y-%m-%d %H:%M:%S} UTC)"
            )
    if safe_from is not None:
        steps.append(
            PlanStep(safe_from, "the switch is safe from here (every cache holds the low TTL)")
        )
    steps.append(PlanStep(switch_at, f"switch {what} (opskit dns update)"))
    last_old = switch_at + timedelta(seconds=ttl_at_switch + 1)
    steps.append(
        PlanStep(
            last_old,
            "the last conforming cache lets go of the old answer; watch with opskit dns wait",
        )
    )
    steps.sort(key=lambda s: s.at or now)
    return SwitchPlan(
        name=name,
        type=rtype,
        current_ttl=current_ttl,
        target_ttl=target_ttl,
        switch_at=switch_at,
        lower_by=lower_by,
        safe_from=safe_from,
        last_old_answer=last_old,
        feasible=not problems,
        steps=tuple(steps),
        problems=tuple(problems),
    )


def plan(
    name: str, options: CheckOptions, *, switch_at: datetime, target_ttl: int, now: datetime
) -> SwitchPlan:
    """Ask the authoritative servers for the TTL now, then lay out the timeline."""
    report = check([name], options, now=now)
    timed = [r for r in report.records if r.ttl is not None]
    if not timed:
        reasons = "; ".join(p for r in report.records for p in r.problems)
        raise Blocked(f"no TTL for {name}: {reasons}")
    record = max(timed, key=lambda r: r.ttl or 0)
    lowering = options.lowering or latest_for(options.lowerings, record.name, record.type)
    return make_plan(
        name=record.name,
        rtype=record.type,
        current_ttl=record.ttl or 0,
        target_ttl=target_ttl,
        switch_at=switch_at,
        now=now,
        lowering=lowering,
    )
