"""What the resolvers' caches say about a switch, pure: who holds what, until when, and why.

A resolver reporting more than the published TTL holds a copy from before a lowering, or stretches
TTLs (unbound cache-min-ttl). The two are told apart by the lowering: a copy from before it cannot
have more left than the old TTL allows. Each gets its own safe time; a clamping one is safe after the
lowering + its clamp, and keeps the old answer up to its clamp after the switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from opskit.dns.report import RecordReport, ResolverAnswer
from opskit.dns.timefmt import when


def _bare(name: str) -> str:
    return name.lower().rstrip(".")


def resolver_notes(resolvers: Sequence[ResolverAnswer], now: datetime) -> list[str]:
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


def stretching(
    report: RecordReport,
    *,
    lowered_at: datetime | None,
    previous_ttl_s: int | None,
    now: datetime,
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
            lowered_at=lowered_at,
            previous_ttl_s=previous_ttl_s,
            now=now,
        )
        what = f"reports {left} s left for {_bare(report.name)} {report.type}, published with {published} s"
        if kind == "clamp" and lowered_at is not None:
            until = lowered_at + timedelta(seconds=left)
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
        elif kind == "old-ttl" and previous_ttl_s is not None:
            until = now + timedelta(seconds=left)
            notes.append(
                f"resolver {r.server} still holds a copy from before the lowering: it {what}, "
                f"within the old {previous_ttl_s} s TTL; it may serve the old answer "
                f"until {when(until, now)}"
            )
        else:
            continue
        safe = max(safe, until) if safe else until
    return safe, problems, notes
