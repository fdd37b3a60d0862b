"""`dns check`: ask every authoritative server, follow chains, peek at resolvers, then decide.

All questions go out concurrently, bounded per server; zones are discovered once per apex.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import dns.name
import dns.rdatatype

from opskit.dns.aiorun import run_sync
from opskit.dns.authview import consensus, observe, serials
from opskit.dns.cacheview import peek_all
from opskit.dns.chain import MAX_CHAIN, effective_ttl, final_answers
from opskit.dns.delegation import findings
from opskit.dns.discovery import Discovery, discover
from opskit.dns.history import latest_for
from opskit.dns.query import Limiter, QueryOptions, ask, make_query, rdtype_of
from opskit.dns.report import CheckReport, Link, RecordReport
from opskit.dns.servers import Server, ServerChoice, parse_name
from opskit.dns.verdict import Lowering, Policy, disagreements, judge, judge_record
from opskit.errors import UsageError

DEFAULT_TYPES = ("A", "AAAA")


@dataclass(frozen=True)
class CheckOptions:
    """Everything `dns check` (and `dns.check`) can be told."""

    types: tuple[str, ...] = DEFAULT_TYPES
    policy: Policy = field(default_factory=Policy)
    nameservers: ServerChoice = field(default_factory=ServerChoice)
    resolvers: tuple[Server, ...] = ()
    query: QueryOptions = field(default_factory=QueryOptions)
    lowering: Lowering | None = None  # --lowered-at/--previous-ttl: applies to every record
    lowerings: tuple[Lowering, ...] = ()  # journaled by dns update / dns.update


class Zones:
    """Discovery results by apex, so 500 names in one zone cost one discovery."""

    def __init__(self, options: CheckOptions) -> None:
        self._options = options
        self._by_apex: dict[str, Discovery] = {}
        self._serials: dict[str, dict[Server, int | str]] = {}

    async def for_name(self, name: str) -> Discovery:
        qname = dns.name.from_text(name)
        known = [
            d for apex, d in self._by_apex.items() if qname.is_subdomain(dns.name.from_text(apex))
        ]
        if known:
            return max(known, key=lambda d: len(d.zone))
        found = await discover(
            name, self._options.nameservers, self._options.resolvers, self._options.query
        )
        self._by_apex.setdefault(found.zone, found)
        return self._by_apex[found.zone]

    async def serials(self, zone: Discovery, limiter: Limiter) -> dict[Server, int | str]:
        if zone.zone not in self._serials:
            self._serials[zone.zone] = await serials(
                zone.zone, zone.nameservers, options=self._options.query, limiter=limiter
            )
        return self._serials[zone.zone]


def check(names: Sequence[str], options: CheckOptions, *, now: datetime) -> CheckReport:
    """READY or NOT READY for every NAME and type (see check_async)."""
    return run_sync(check_async(names, options, now=now))


async def check_async(names: Sequence[str], options: CheckOptions, *, now: datetime) -> CheckReport:
    """Ask, compare, decide; raises Blocked only when no zone can be found at all."""
    if not names:
        raise UsageError("give at least one NAME to check")
    names = [parse_name("NAME", n) for n in names]
    if options.policy.changes:
        parse_name("--changes", options.policy.changes)
    types = [_type(t) for t in options.types]
    zones = Zones(options)
    limiter = Limiter(options.query.per_server)
    discovered = {}
    for name in dict.fromkeys(names):  # sequential: names in a known zone need no query
        discovered[name] = await zones.for_name(name)
    for d in {d.zone: d for d in discovered.values()}.values():
        await zones.serials(d, limiter)
    jobs = [
        _record(name, t, discovered[name], zones, limiter, options, now)
        for name in discovered
        for t in types
    ]
    records = await asyncio.gather(*jobs)
    _changes_is_a_link(options.policy.changes, records)
    pairs = []
    for observed in records:
        lowering = options.lowering or latest_for(options.lowerings, observed.name, observed.type)
        verdict = judge_record(observed, policy=options.policy, lowering=lowering, now=now)
        rec = dataclasses.replace(
            observed,
            problems=observed.problems + verdict.problems,
            ready=verdict.ready and not observed.problems,
            blocked=verdict.blocked,
            safe_after=verdict.safe_after,
            notes=observed.notes + verdict.notes,
        )
        pairs.append((rec, verdict))
    overall = judge([(r, dataclasses.replace(v, ready=r.ready)) for r, v in pairs], now)
    return CheckReport(
        ready=overall.ready,
        records=tuple(r for r, _ in pairs),
        safe_after=overall.safe_after,
        blocked=overall.blocked,
        verdict=overall.verdict,
    )


def _changes_is_a_link(changes: str | None, records: Sequence[RecordReport]) -> None:
    """--changes must name a link of the chain checked: gating on another name would gate on nothing."""
    if not changes:
        return
    wanted = dns.name.from_text(changes).to_text().lower()
    links = {link.name.lower() for r in records for link in r.chain}
    if links and wanted not in links:
        shown = " -> ".join(
            dict.fromkeys(link.name.rstrip(".") for r in records for link in r.chain)
        )
        raise UsageError(f"--changes {changes}: not a link of the chain checked ({shown})")


def _type(text: str) -> dns.rdatatype.RdataType:
    try:
        return rdtype_of(text)
    except ValueError as exc:
        raise UsageError(f"--type: {exc}") from None


async def _record(  # noqa: PLR0917 - one record's whole context, called in one place
    name: str,
    rdtype: dns.rdatatype.RdataType,
    zone: Discovery,
    zones: Zones,
    limiter: Limiter,
    options: CheckOptions,
    now: datetime,
) -> RecordReport:
    """One NAME TYPE: authoritative views, the whole chain (across zones), and the resolvers' caches."""
    changes = options.policy.changes
    zone_serials = await zones.serials(zone, limiter)
    nameservers, pending = await observe(
        name,
        rdtype,
        zone.zone,
        zone.nameservers,
        zone_serials,
        options=options.query,
        limiter=limiter,
        changes=changes,
    )
    chain: list[Link] = list(consensus(nameservers))
    problems: list[str] = list(zone.problems)
    one_sided, notes = findings(zone.one_sided, nameservers, name, dns.rdatatype.to_text(rdtype))
    problems += one_sided
    for _ in range(MAX_CHAIN):
        if pending is None:
            break
        other = await zones.for_name(pending.to_text())
        more, pending = await observe(
            pending.to_text(),
            rdtype,
            other.zone,
            other.nameservers,
            await zones.serials(other, limiter),
            options=options.query,
            limiter=limiter,
            changes=changes,
        )
        problems += [f"{other.zone}: {p}" for p in disagreements(more)]
        problems += [f"{ns.server} ({other.zone}) {ns.error}" for ns in more if ns.error]
        chain += consensus(more)
    chain = await _with_dnskey_ttl(chain, zone, options.query, limiter)
    ttl = effective_ttl(chain, changes)
    resolvers = (
        await peek_all(
            options.resolvers,
            name,
            rdtype,
            options=options.query,
            now=now,
            changes=changes,
            auth_ttl=ttl,
        )
        if options.resolvers
        else []
    )
    return RecordReport(
        name=dns.name.from_text(name).to_text(),
        type=dns.rdatatype.to_text(rdtype),
        ttl=ttl,
        answers=final_answers(chain),
        chain=tuple(chain),
        nameservers=tuple(nameservers),
        resolvers=tuple(resolvers),
        problems=tuple(problems),
        zone=zone.zone,
        notes=zone.notes + tuple(notes),
    )


async def _with_dnskey_ttl(
    chain: list[Link], zone: Discovery, options: QueryOptions, limiter: Limiter
) -> list[Link]:
    if not any(link.dnssec for link in chain) or not zone.nameservers:
        return chain
    outcome = await ask(
        zone.nameservers[0],
        make_query(zone.zone, dns.rdatatype.DNSKEY),
        options=options,
        limiter=limiter,
    )
    key_ttl = None
    if outcome.response is not None:
        for rrset in outcome.response.answer:
            if rrset.rdtype == dns.rdatatype.DNSKEY:
                key_ttl = int(rrset.ttl)
    return [
        dataclasses.replace(link, dnssec=dataclasses.replace(link.dnssec, dnskey_ttl=key_ttl))
        if link.dnssec
        else link
        for link in chain
    ]
