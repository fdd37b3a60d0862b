"""READY or NOT READY, with each reason and its fix: pure, with the clock injected.

The safe switch time is T_pub + TTL_old, not T_lower + TTL_new: caches that fetched the record before the
lowered TTL was published keep it for the full old TTL (lab finding in dns-anchors.md section 0).
A low TTL seen now proves nothing about when it was lowered, so without a journaled lowering, explicit
--lowered-at/--previous-ttl, or resolver evidence, the verdict says what it would need.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from opskit.dns.chain import chain_problem, gate_link
from opskit.dns.dnssec import signed_path
from opskit.dns.report import Link, NameserverAnswer, RecordReport, ResolverAnswer
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


def _fingerprint(
    ns: NameserverAnswer, upto: int | None = None
) -> tuple[tuple[str, str, int | None, tuple[str, ...], str], ...]:
    return tuple((lk.name.lower(), lk.type, lk.ttl, lk.answers, lk.rcode) for lk in ns.chain[:upto])


def _unfinished(ns: NameserverAnswer) -> bool:
    """The server stopped inside a chain (knot answers 5 links of a longer chain, nsd all of them)."""
    return bool(ns.chain) and ns.chain[-1].type == "CNAME" and not ns.chain[-1].negative


def _groups(answered: Sequence[NameserverAnswer]) -> int:
    """How many different answers the servers gave, comparing a partial chain only as far as it goes."""
    shortest = min((len(ns.chain) for ns in answered if _unfinished(ns)), default=None)
    prefixes = {_fingerprint(ns, shortest) for ns in answered}
    whole = {_fingerprint(ns) for ns in answered if not _unfinished(ns)}
    return max(len(prefixes), len(whole))


def _show(ns: NameserverAnswer) -> str:
    data = ", ".join(ns.answers) if ns.answers else (ns.chain[-1].rcode if ns.chain else "nothing")
    return f"{ns.server} {data} ttl {ns.ttl} serial {ns.serial}"


def disagreements(nameservers: Sequence[NameserverAnswer]) -> list[str]:
    """Answers, TTLs and serials that differ between authoritative servers (same serial != same data)."""
    answered = [ns for ns in nameservers if ns.error is None]
    problems: list[str] = []
    if _groups(answered) > 1:
        shown = "; ".join(_show(ns) for ns in answered)
        serials = {ns.serial for ns in answered}
        why = (
            f" under the same SOA serial {serials.pop()} (a zone changed without a serial bump)"
            if len(serials) == 1
            else ""
        )
        problems.append(
            f"authoritative servers disagree{why}: {shown}; make every server serve the same zone "
            "(bump the serial, reload, NOTIFY the secondaries) before the switch"
        )
    serials_seen = {ns.serial for ns in answered if ns.serial is not None}
    if len(serials_seen) > 1:
        newest = max(serials_seen, key=lambda s: sum(_newer(s, o) for o in serials_seen))
        lagging = ", ".join(
            f"{ns.server} has {ns.serial}" for ns in answered if ns.serial != newest
        )
        problems.append(
            f"SOA serials differ (newest {newest}; {lagging}): wait until every server has "
            "transferred the zone, or send NOTIFY"
        )
    return problems


def _newer(a: int, b: int) -> bool:
    """RFC 1982 serial arithmetic: a is newer than b."""
    return a != b and ((a - b) % 2**32) < 2**31


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
        cache_safe, more, said = _stretching(report, lowering, now)
        problems += more
        notes += said
        if cache_safe is not None and safe_after is not None:
            safe_after = max(safe_after, cache_safe)
    signed_problems, signed_notes = signed_path(report, safe_after, now)
    blockers += signed_problems  # a signature or a DS is fixed at the signer, not by waiting
    problems += signed_problems
    notes += signed_notes
    notes += _resolver_notes(report.resolvers, now)
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


def _resolver_notes(resolvers: Sequence[ResolverAnswer], now: datetime) -> list[str]:
    notes: list[str] = []
    for r in resolvers:
        if r.error is not None:
            notes.append(f"resolver {r.server} {r.error}")
            continue
        if r.primed:
            why = r.primed_why or "may have answered by recursing"
            notes.append(f"resolver {r.server}: cache view unknown ({why})")
            continue
        if not r.cached:
            notes.append(f"resolver {r.server} does not hold it (not cached)")
        elif r.serves_until is not None:
            data = ", ".join(r.answers) if r.answers else (r.rcode or "a negative answer")
            notes.append(f"{r.server} may serve {data} until {when(r.serves_until, now)}")
        if r.label:
            notes.append(f"resolver {r.server} {r.label}")
    return notes


def reading(
    remaining_s: int,
    published_ttl_s: int,
    *,
    lowered_at: datetime | None,
    previous_ttl_s: int | None,
    now: datetime,
) -> str:
    """What a resolver's remaining TTL says about it: "conforming", "clamp", "old-ttl" or "either".

    More than the published TTL left is a copy from before a lowering, or a resolver that stretches
    TTLs (unbound cache-min-ttl). A copy from before the lowering has at most lowered_at + previous TTL
    - now left; a resolver reporting more than that stretches TTLs. Without a known lowering the two
    look the same ("either").
    """
    if remaining_s <= published_ttl_s:
        return "conforming"
    if lowered_at is None or previous_ttl_s is None:
        return "either"
    old_left = (lowered_at - now).total_seconds() + previous_ttl_s
    # +1 s: TTLs count whole seconds, and the lowering time was taken after the server showed it
    return "clamp" if remaining_s > old_left + 1 else "old-ttl"


def _stretching(
    report: RecordReport, lowering: Lowering | None, now: datetime
) -> tuple[datetime | None, list[str], list[str]]:
    """Resolvers holding more than the published TTL: a clamp, or a copy from before the lowering.

    A clamping resolver (cache-min-ttl) is safe after the lowering + its clamp, and keeps the old
    answer up to its clamp after the switch; a copy from before the lowering is gone when it runs out.
    """
    published = report.ttl
    safe: datetime | None = None
    problems: list[str] = []
    notes: list[str] = []
    if published is None:
        return None, [], []
    for r in report.resolvers:
        if r.error is not None or r.primed or r.ttl_remaining is None:
            continue
        left = r.ttl_remaining
        kind = reading(
            left,
            published,
            lowered_at=lowering.lowered_at if lowering else None,
            previous_ttl_s=lowering.previous_ttl_s if lowering else None,
            now=now,
        )
        what = f"reports {left} s left for {_bare(report.name)} {report.type}, published with {published} s"
        if kind == "clamp" and lowering is not None:
            until = lowering.lowered_at + timedelta(seconds=left)
            notes.append(
                f"resolver {r.server} clamps TTLs (cache-min-ttl of at least {left} s): it {what}, "
                f"more than any copy from before the lowering can have left; it is safe from "
                f"{when(until, now)} (the lowering + its clamp), and after the switch it may keep "
                f"the old answer up to its clamp"
            )
            if until > now:
                problems.append(
                    f"resolver {r.server} clamps TTLs to at least {left} s: wait until "
                    f"{when(until, now)} (the lowering + its clamp) before the switch"
                )
        elif kind == "old-ttl" and lowering is not None:
            until = now + timedelta(seconds=left)
            notes.append(
                f"resolver {r.server} still holds a copy from before the lowering: it {what}, "
                f"within the old {lowering.previous_ttl_s} s TTL; it may serve the old answer "
                f"until {when(until, now)}"
            )
        else:
            continue
        safe = max(safe, until) if safe else until
    return safe, problems, notes


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
