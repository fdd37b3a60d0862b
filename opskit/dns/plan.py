"""`dns plan`: the timeline of a planned switch, from the TTL published now.

- latest time to lower the TTL: switch_at - current TTL (plus however long your secondaries lag);
- earliest safe switch: the moment the lowered TTL is published + the old TTL;
- last moment a conforming cache can return the old answer: switch_at + the TTL at switch time + 1 s
  (later when the TTL was lowered too late: whatever caches fetched before the lowering runs on).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from opskit.dns.chain import gate_link
from opskit.dns.check import CheckOptions, check
from opskit.dns.dnssec import signed_path
from opskit.dns.history import latest_for
from opskit.dns.timefmt import as_utc, ceil_second
from opskit.dns.verdict import ASSUMED_MAX_CACHE_TTL_S, Lowering
from opskit.errors import Blocked, UsageError


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
    caveats: tuple[str, ...] = ()  # the plan holds only if these are true (opskit cannot see them)


def _floor(moment: datetime) -> datetime:
    """A deadline is never shown late."""
    return moment.replace(microsecond=0)


def _not_past(switch_at: datetime, now: datetime) -> None:
    switch_at, now = as_utc(switch_at), as_utc(now)
    if switch_at < now:
        raise UsageError(
            f"--switch-at {switch_at:%Y-%m-%d %H:%M:%S} UTC is in the past "
            f"(now {now:%Y-%m-%d %H:%M:%S} UTC)"
        )


def make_plan(
    *,
    name: str,
    rtype: str,
    current_ttl: int,
    target_ttl: int,
    switch_at: datetime,
    now: datetime,
    lowering: Lowering | None = None,
    lower_what: str | None = None,
    blockers: tuple[str, ...] = (),
) -> SwitchPlan:
    """The timeline, pure: every time follows from the TTLs, the switch time and `now`.

    `lower_what` names the RRset whose TTL gates the switch (a CNAME link of NAME, say); default NAME TYPE.
    """
    switch_at = as_utc(switch_at)  # the timeline is shown in UTC, whatever zone --switch-at had
    what = f"{name.rstrip('.')} {rtype}"
    lowered_rrset = lower_what or what
    _not_past(switch_at, now)
    steps: list[PlanStep] = []
    # what `dns check` refuses and no waiting fixes (disagreement, a failing server, a loop) sinks
    # the plan too: a timeline on top of a broken record would read as permission
    problems: list[str] = list(blockers)
    caveats: list[str] = []
    lower_by: datetime | None = None
    safe_from: datetime | None
    # caches that fetched the old answer before the switch keep it this long after the switch
    old_held_until = switch_at + timedelta(seconds=current_ttl)
    if current_ttl > target_ttl:
        lower_by = _floor(switch_at - timedelta(seconds=current_ttl))
        safe_from = ceil_second(max(now, lower_by) + timedelta(seconds=current_ttl))
        steps.append(
            PlanStep(
                lower_by,
                f"lower the TTL of {lowered_rrset} from {current_ttl} to {target_ttl} s at the "
                "latest (every authoritative server must serve it by then: opskit dns update)",
            )
        )
        if lower_by < now:
            problems.append(
                f"too late to lower the TTL of {lowered_rrset} in time: lowered now, the switch is "
                f"safe only from {safe_from:%Y-%m-%d %H:%M:%S} UTC; move the switch or keep the old "
                "host answering until then"
            )
        # lowered now at the latest: what caches fetched before that still runs on the old TTL
        old_held_until = max(
            switch_at + timedelta(seconds=target_ttl),
            max(now, lower_by) + timedelta(seconds=current_ttl),
        )
    elif lowering is not None:
        safe_from = ceil_second(lowering.safe_after)
        steps.append(
            PlanStep(
                lowering.lowered_at,
                f"TTL of {lowered_rrset} lowered from {lowering.previous_ttl_s} s",
            )
        )
        if safe_from > switch_at:
            problems.append(
                f"the switch at {switch_at:%Y-%m-%d %H:%M:%S} UTC is before the old TTL has run out "
                f"({safe_from:%Y-%m-%d %H:%M:%S} UTC): move the switch or keep the old host "
                "answering until then"
            )
            old_held_until = max(old_held_until, lowering.safe_after)
    else:
        safe_from = None
        caveats.append(
            f"the TTL of {lowered_rrset} was already {current_ttl} s at least "
            f"{ASSUMED_MAX_CACHE_TTL_S} s before the switch (give --lowered-at and --previous-ttl "
            "if it was lowered recently)"
        )
    if safe_from is not None:
        steps.append(
            PlanStep(safe_from, "the switch is safe from here (every cache holds the low TTL)")
        )
    steps.append(PlanStep(switch_at, f"switch {what} (opskit dns update)"))
    # +1 s: unbound still returns the old answer with TTL 0 in its expiry second (lab transcript)
    last_old = ceil_second(old_held_until + timedelta(seconds=1))
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
        caveats=tuple(caveats),
    )


def plan(
    name: str, options: CheckOptions, *, switch_at: datetime, target_ttl: int, now: datetime
) -> SwitchPlan:
    """Ask the authoritative servers for the TTL now, then lay out the timeline."""
    _not_past(switch_at, now)
    report = check([name], options, now=now)
    blockers = tuple(dict.fromkeys(p for r in report.records for p in r.blockers))
    timed = [r for r in report.records if r.ttl is not None]
    if report.blocked or (not timed and not blockers):
        reasons = "; ".join(p for r in report.records for p in r.problems)
        raise Blocked(f"no TTL for {name}: {reasons}")
    record = max(timed or report.records, key=lambda r: r.ttl or 0)
    link = gate_link(record.chain, options.policy.changes)
    lower_what = f"{link.name.rstrip('.')} {link.type}" if link is not None else None
    lowering = options.lowering or latest_for(
        options.lowerings,
        link.name if link is not None else record.name,
        link.type if link is not None else record.type,
    )
    made = make_plan(
        name=record.name,
        rtype=record.type,
        current_ttl=record.ttl or 0,
        target_ttl=target_ttl,
        switch_at=switch_at,
        now=now,
        lowering=lowering,
        lower_what=lower_what,
        blockers=blockers,
    )
    # signatures valid now may run out before a switch days away: fine while the signer keeps
    # re-signing, which opskit cannot see from outside, so the plan holds only "if" it does
    later = [p for r in report.records for p in signed_path(r, as_utc(switch_at), now)[0]]
    signer = tuple(f"the signer refreshes it in time ({p})" for p in dict.fromkeys(later))
    if not signer or not made.feasible:
        return made
    return dataclasses.replace(made, caveats=made.caveats + signer)
