"""READY or NOT READY, with each reason and its fix: pure, with the clock injected.

The safe switch time is T_pub + TTL_old, not T_lower + TTL_new: caches that fetched the record before the
lowered TTL was published keep it for the full old TTL (lab finding in dns-anchors.md section 0).
A low TTL seen now proves nothing about when it was lowered, so without a journaled lowering, explicit
--lowered-at/--previous-ttl, or resolver evidence, the verdict says what it would need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from opskit.dns.agreement import disagreements
from opskit.dns.cacheverdict import resolver_notes, stretching
from opskit.dns.chain import chain_problem, gate_link
from opskit.dns.dnssec import signed_path
from opskit.dns.report import CheckReport, Link, RecordReport
from opskit.dns.timefmt import as_utc, when

# The longest a common resolver keeps anything (unbound cache-max-ttl default); used only to say what an
# unknown lowering time would have to be, never to declare a switch safe.
ASSUMED_MAX_CACHE_TTL_S = 86400
DEFAULT_MAX_TTL_S = 600
DEFAULT_TARGET_TTL_S = 300


@dataclass(frozen=True)
class Policy:
    """The gate: the largest TTL allowed at switch time and the TTL the fix suggests."""

    max_ttl_s: int = DEFAULT_MAX_TTL_S
    target_ttl_s: int = DEFAULT_TARGET_TTL_S
    changes: str | None = None

    @classmethod
    def for_max(cls, max_ttl_s: int, changes: str | None = None) -> Policy:
        return cls(max_ttl_s, min(DEFAULT_TARGET_TTL_S, max_ttl_s), changes)


@dataclass(frozen=True)
class Lowering:
    """When a TTL was lowered and what it was before (journaled by `dns update` or given by flags)."""

    lowered_at: datetime
    previous_ttl_s: int
    name: str | None = None  # None: applies to every record checked
    type: str | None = None
    new_ttl_s: int | None = None

    def __post_init__(self) -> None:
        # A hand-written --lowered-at or journal line may carry another zone or none at all.
        object.__setattr__(self, "lowered_at", as_utc(self.lowered_at))

    @property
    def safe_after(self) -> datetime:
        return self.lowered_at + timedelta(seconds=self.previous_ttl_s)

    def applies_to(self, name: str, rtype: str) -> bool:
        same_name = self.name is None or _bare(self.name) == _bare(name)
        return same_name and (self.type is None or self.type.upper() == rtype.upper())


@dataclass(frozen=True)
class RecordVerdict:
    """The decision for one record."""

    ready: bool
    blocked: bool
    safe_after: datetime | None
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    blockers: tuple[str, ...] = ()  # the problems no wait fixes: `dns plan` refuses on these too


@dataclass(frozen=True)
class Overall:
    """The decision for the whole check, in one line."""

    ready: bool
    blocked: bool
    safe_after: datetime | None
    verdict: str


def _bare(name: str) -> str:
    return name.lower().rstrip(".")


def judge_record(
    report: RecordReport,
    *,
    policy: Policy,
    lowering: Lowering | None,
    now: datetime,
    present_types: Collection[str] = (),
) -> RecordVerdict:
    """Decide one record from what the servers said (`report.problems`: what asking already found)."""
    notes: list[str] = []
    answered = [ns for ns in report.nameservers if ns.error is None]
    if not answered:
        why = (
            "; ".join(f"{ns.server} {ns.error}" for ns in report.nameservers) or "no server to ask"
        )
        return RecordVerdict(False, True, None, (f"no authoritative server answered: {why}",), ())
    blockers = list(report.problems)
    for ns in report.nameservers:
        if ns.error is not None:
            blockers.append(f"{ns.server} {ns.error}: every authoritative server must answer")
    blockers += disagreements(report.nameservers)
    broken = chain_problem(report.chain)
    if broken is not None:
        # a chain resolvers cannot follow has no TTL worth gating on: clients get SERVFAIL
        blockers.append(broken)
        return RecordVerdict(False, False, None, tuple(blockers), (), tuple(blockers))
    problems = list(blockers)
    link = gate_link(report.chain, policy.changes)
    safe_after: datetime | None = None
    if link is None or link.ttl is None:
        problems.append(f"no TTL for {_bare(report.name)} {report.type} (no data, no SOA)")
    elif (family := _other_family(link, present_types)) is not None:
        # an IPv4-only name has no AAAA to switch: nothing is cached that the switch changes
        safe_after = now
        notes.append(
            f"no {link.type} at {_bare(link.name)} ({family} only): nothing to switch for "
            f"{'IPv6' if link.type == 'AAAA' else 'IPv4'} clients; if the switch adds {link.type}, "
            f"resolvers cache its absence for up to {link.ttl} s"
        )
    elif link.ttl > policy.max_ttl_s:
        safe_after = now + timedelta(seconds=link.ttl)
        problems.append(_too_long(link, report, policy, safe_after, now))
    else:
        safe_after, more = _lowering_evidence(report, link, policy, lowering, now, notes)
        problems += more
        cache_safe, more, said = stretching(
            report,
            lowered_at=lowering.lowered_at if lowering else None,
            previous_ttl_s=lowering.previous_ttl_s if lowering else None,
            now=now,
        )
        problems += more
        notes += said
        if cache_safe is not None and safe_after is not None:
            safe_after = max(safe_after, cache_safe)
    signed_problems, signed_notes = signed_path(report, safe_after, now)
    blockers += signed_problems  # a signature or a DS is fixed at the signer, not by waiting
    problems += signed_problems
    notes += signed_notes
    notes += resolver_notes(report.resolvers, now)
    return RecordVerdict(
        not problems, False, safe_after, tuple(problems), tuple(notes), tuple(blockers)
    )


def _other_family(link: Link, present_types: Collection[str]) -> str | None:
    """ "IPv4"/"IPv6" when this address type is absent (NODATA) while the other one exists."""
    other = {"A": "AAAA", "AAAA": "A"}.get(link.type)
    if link.rcode != "NODATA" or other is None or other not in present_types:
        return None
    return "IPv4" if other == "A" else "IPv6"


def _too_long(
    link: Link, report: RecordReport, policy: Policy, safe: datetime, now: datetime
) -> str:
    path = f" (via the CNAME chain of {_bare(report.name)})" if len(report.chain) > 1 else ""
    if link.negative:
        return (
            f"{_bare(link.name)} {link.type} does not exist yet ({link.rcode}) and resolvers cache that "
            f"for {link.ttl} s (min of SOA TTL and SOA MINIMUM), above the {policy.max_ttl_s} s limit: "
            f"lower the SOA MINIMUM of {report.zone or 'the zone'} to {policy.target_ttl_s}, or create the "
            f"record now; the switch is safe from {when(safe, now)}"
        )
    owner = (
        f"{_bare(link.wildcard)} {link.type}"
        if link.wildcard
        else f"{_bare(link.name)} {link.type}"
    )
    synthesized = (
        f" ({_bare(link.name)} has no record of its own: the answer is synthesized from the "
        f"wildcard {_bare(link.wildcard)})"
        if link.wildcard
        else ""
    )
    return (
        f"TTL {link.ttl} s of {_bare(link.name)} {link.type}{path} is above the {policy.max_ttl_s} s limit: "
        f"lower the TTL of {owner} from {link.ttl} to {policy.target_ttl_s} now{synthesized}; "
        f"the switch is safe from {when(safe, now)}"
    )


def _lowering_evidence(  # noqa: PLR0917 - internal step of judge_record
    report: RecordReport,
    link: Link,
    policy: Policy,
    lowering: Lowering | None,
    now: datetime,
    notes: list[str],
) -> tuple[datetime | None, list[str]]:
    """When the switch is safe for a TTL that is low now, from the best evidence there is."""
    ttl = link.ttl or 0
    what = f"{_bare(link.name)} {link.type}"
    if link.negative:
        # creating a record is the switch: caches drop the cached "no such record" within this TTL
        missing = (
            f"{what} does not exist (NXDOMAIN)"
            if link.rcode == "NXDOMAIN"
            else f"{_bare(link.name)} has no {link.type} record (NODATA)"
        )
        notes.append(
            f"{missing}; caches keep that answer up to {ttl} s "
            "(negative TTL: min of SOA TTL and SOA MINIMUM), so a new record shows within that"
            + (
                "; check the spelling if you expected it to exist"
                if link.rcode == "NXDOMAIN"
                else ""
            )
        )
        return now, []
    if lowering is not None and lowering.applies_to(link.name, link.type):
        safe = lowering.safe_after
        if safe > now:
            return safe, [
                f"the TTL of {what} was lowered from {lowering.previous_ttl_s} s at "
                f"{when(lowering.lowered_at, now)}: caches may hold the old answer for the old TTL; "
                f"wait until {when(safe, now)} before the switch"
            ]
        notes.append(
            f"the TTL of {what} was lowered from {lowering.previous_ttl_s} s at "
            f"{when(lowering.lowered_at, now)}: every cache has expired the old TTL since {when(safe, now)}"
        )
        return safe, []
    # only a cache that already held the record is evidence; one that may have recursed says nothing
    held = [
        r
        for r in report.resolvers
        if r.error is None and r.ttl_remaining is not None and not r.primed
    ]
    if held:
        top = max(held, key=lambda r: r.ttl_remaining or 0)
        remaining = top.ttl_remaining or 0
        if remaining > max(ttl, policy.max_ttl_s):
            safe = now + timedelta(seconds=remaining)
            return safe, [
                f"resolver {top.server} still holds {what} for {remaining} s, above the "
                f"{policy.max_ttl_s} s limit: a TTL from before a lowering, or a resolver that "
                f"stretches TTLs (cache-min-ttl); it may serve the old answer until "
                f"{when(safe, now)}, so the switch is safe from then (give --lowered-at and "
                "--previous-ttl to tell the two apart)"
            ]
    witnesses = held
    if witnesses:
        notes.append(
            f"no sampled resolver holds {what} longer than {max(ttl, policy.max_ttl_s)} s "
            f"({len(witnesses)} sampled); caches not sampled may still hold an older TTL"
        )
        return now, []
    notes.append(
        f"TTL is {ttl} s now; safe only if it was lowered at least {ASSUMED_MAX_CACHE_TTL_S} s ago "
        "(give --lowered-at and --previous-ttl, or lower it with `opskit dns update`, which records when)"
    )
    return None, []


def judge(verdicts: Sequence[tuple[RecordReport, RecordVerdict]], now: datetime) -> Overall:
    """The whole check: READY only when every record is; blocked when a record had no usable answer."""
    blocked = [r for r, v in verdicts if v.blocked]
    waiting = [(r, v) for r, v in verdicts if not v.ready and not v.blocked]
    known = [v.safe_after for _, v in verdicts if v.safe_after is not None]
    latest = max(known) if known else None
    missing = sorted(
        {_bare(r.name) for r, _ in verdicts if r.chain and r.chain[-1].rcode == "NXDOMAIN"}
    )
    absent = f"; {', '.join(missing)} does not exist yet (NXDOMAIN)" if missing else ""
    if blocked:
        names = ", ".join(f"{_bare(r.name)} {r.type}" for r in blocked)
        return Overall(False, True, None, f"BLOCKED: no usable answer for {names}")
    if waiting:
        names = ", ".join(f"{_bare(r.name)} {r.type}" for r, _ in waiting)
        # a record whose safe time is unknown cannot make it earlier: the latest known one is the
        # earliest moment the whole switch can be safe
        tail = f"; safe from {when(latest, now)}" if latest and latest > now else ""
        if any(v.blockers for _, v in waiting):
            tail += "; waiting alone will not make it READY: fix the problems marked above"
        return Overall(False, False, latest, f"NOT READY: {names}{tail}{absent}")
    ttls = [r.ttl for r, _ in verdicts if r.ttl is not None]
    top = max(ttls) if ttls else 0
    if len(known) < len(verdicts):
        return Overall(
            True,
            False,
            None,
            f"READY (if the TTL was lowered long enough ago): effective TTL {top} s{absent}",
        )
    since = f"safe since {when(latest, now)}" if latest and latest < now else "safe now"
    return Overall(True, False, latest, f"READY: effective TTL {top} s, {since}{absent}")


def decide(
    records: Sequence[RecordReport],
    *,
    policy: Policy,
    lowering_for: Callable[[str, str], Lowering | None],
    now: datetime,
) -> CheckReport:
    """The one verdict of `dns check`, `dns plan` and the dns.* actions, from what the servers said.

    Pure: the records as observed, the gate, the known lowerings and the clock go in; READY or NOT
    READY, each record's problems, blockers, notes and safe time come out.
    """
    # the address types that exist at each final name: a missing AAAA beside an A is a note
    present = {(r.chain[-1].name.lower(), r.type) for r in records if r.chain and r.answers}
    pairs = []
    for observed in records:
        final = observed.chain[-1].name.lower() if observed.chain else ""
        # the lowering that counts is the gating link's: through a CNAME, the target's record
        link = gate_link(observed.chain, policy.changes)
        verdict = judge_record(
            observed,
            policy=policy,
            lowering=lowering_for(link.name, link.type)
            if link is not None
            else lowering_for(observed.name, observed.type),
            now=now,
            present_types={t for n, t in present if n == final},
        )
        rec = dataclasses.replace(
            observed,
            problems=verdict.problems,
            ready=verdict.ready,
            blocked=verdict.blocked,
            safe_after=verdict.safe_after,
            notes=observed.notes + verdict.notes,  # what asking found (delegation, -4/-6)
            blockers=verdict.blockers,
        )
        pairs.append((rec, verdict))
    overall = judge(pairs, now)
    return CheckReport(
        ready=overall.ready,
        records=tuple(r for r, _ in pairs),
        safe_after=overall.safe_after,
        blocked=overall.blocked,
        verdict=overall.verdict,
    )
