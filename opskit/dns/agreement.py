"""Do the authoritative servers agree? Answers, TTLs and SOA serials compared, pure.

Two servers with the same serial and different data disagree (a zone reloaded without a serial bump),
and so do equal data under two serials; a server that stops inside a long chain is compared only as far
as it went.
"""

from __future__ import annotations

from collections.abc import Sequence

from opskit.dns.report import NameserverAnswer


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
